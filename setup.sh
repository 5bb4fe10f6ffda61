#!/usr/bin/env bash
# Set up the virtual-staining exercise: environment, Jupyter kernel, data.
# Safe to run again: finished steps are checked and skipped.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

ENV_NAME=06_image_translation
EXTRAS="notebook,download,dev,viscy"
cd "$(dirname "$0")"

usage() {
    cat <<'EOF'
usage: sh setup.sh [--synthetic | --real | --no-data] [--venv] [--no-env] [--help]

Creates the environment (conda env 06_image_translation where conda exists, else .venv),
installs this package with its extras, registers the Jupyter kernel 06_image_translation,
and prepares data/: the real A549 dataset when it can be reached, otherwise the built-in
synthetic dataset.

  --synthetic  make the built-in synthetic dataset (offline, about 30 s)
  --real       download the real A549 dataset and VisCy's published VSCyto2D model
               (checkpoints/VSCyto2D/); fail if they cannot be reached. The plates'
               URLs (or paths) come from PIX2PIXHD_TRAIN_URL and PIX2PIXHD_TEST_URL
               when set, the model's from PIX2PIXHD_VSCYTO2D_URL
  --no-data    set up the environment only
  --venv       use .venv even where conda exists (what `make` uses)
  --no-env     skip the environment; only prepare data with the active python
  --help       this text
EOF
}

DATA_MODE=auto
ENV_MODE=auto
for arg in "$@"; do
    case "$arg" in
        --synthetic) DATA_MODE=synthetic ;;
        --real) DATA_MODE=real ;;
        --no-data) DATA_MODE=none ;;
        --venv) ENV_MODE=venv ;;
        --no-env) ENV_MODE=none ;;
        -h|--help) usage; exit 0 ;;
        *) echo "setup.sh: unknown option $arg" >&2; usage >&2; exit 2 ;;
    esac
done

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
fail() { printf '\033[1;31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

setup_conda() {
    if conda env list | awk '{print $1}' | grep -qx "$ENV_NAME"; then
        say "conda env $ENV_NAME exists; updating the package install"
        conda run -n "$ENV_NAME" python -m pip install --quiet -e ".[$EXTRAS]" \
            || fail "pip install into conda env $ENV_NAME failed (see above)"
    else
        say "creating conda env $ENV_NAME from environment.yml (several minutes)"
        conda env create -f environment.yml || fail "conda env create failed (see above)"
    fi
    PY="conda run --no-capture-output -n $ENV_NAME python"
}

setup_venv() {
    if [ ! -x .venv/bin/python ]; then
        say "creating .venv with $(python3 --version 2>&1)"
        python3 -m venv .venv || fail "python3 -m venv failed: install python3-venv (Python >= 3.10)"
    fi
    PY=.venv/bin/python
    if [ -f .venv/.installed ] && [ .venv/.installed -nt pyproject.toml ]; then
        say ".venv is up to date"
    else
        say "installing pix2pixhd[$EXTRAS] into .venv (first time: a few minutes, torch is large)"
        $PY -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
        $PY -m pip install --quiet -e ".[$EXTRAS]" 2> >(grep -v "^WARNING: Location" >&2) \
            || fail "pip install failed (see above); check the network or pip configuration"
        touch .venv/.installed
    fi
}

case "$ENV_MODE" in
    none) PY=${PYTHON:-python3} ;;
    venv) setup_venv ;;
    auto) if command -v conda >/dev/null 2>&1; then setup_conda; else setup_venv; fi ;;
esac

if [ "$ENV_MODE" != none ]; then
    $PY -m ipykernel install --user --name "$ENV_NAME" --display-name "Python ($ENV_NAME)" \
        >/dev/null 2>&1 && say "Jupyter kernel $ENV_NAME registered" \
        || fail "could not register the Jupyter kernel $ENV_NAME"
fi

make_synthetic() {
    say "making the built-in synthetic dataset in data/"
    $PY -m pix2pixhd data synthetic --out data || fail "synthetic dataset generation failed"
}

if [ "$DATA_MODE" = none ]; then
    say "environment ready (no data requested)"
elif [ -f data/dataset.json ]; then
    if ! grep -q '"p_top"' data/dataset.json; then  # written before the asinh stain map
        say "data/dataset.json has no p_top, which the presets' stain map needs: measuring it"
        $PY -m pix2pixhd data statistics data || fail "could not measure data/'s statistics"
    fi
    say "data/ is ready ($($PY -c 'import json; print(json.load(open("data/dataset.json"))["source"])'))"
else
    case "$DATA_MODE" in
        synthetic) make_synthetic ;;
        real) $PY -m pix2pixhd data download --out data || fail "download of the A549 dataset failed" ;;
        auto)
            log=$(mktemp)
            if ! $PY -m pix2pixhd data download --out data 2>"$log"; then
                if [ -d data ] && [ -n "$(ls -A data 2>/dev/null)" ]; then
                    cat "$log" >&2; rm -f "$log"
                    fail "the download stopped part-way; run 'sh setup.sh --real' to resume it, or delete data/ and run 'sh setup.sh --synthetic'"
                fi
                say "offline: $(tail -n 1 "$log" | sed 's/^error: //'); making the synthetic dataset instead"
                make_synthetic
            fi
            rm -f "$log" ;;
    esac
    $PY -m pix2pixhd data check data || fail "data/ did not pass its check (see above)"
fi

if [ "$DATA_MODE" = real ]; then
    $PY -m pix2pixhd data download --viscy-model \
        || fail "download of VisCy's VSCyto2D model failed; run 'sh setup.sh --real' again to resume"
fi

case "$ENV_MODE:$PY" in
    none:*) next="jupyter lab exercise.ipynb" ;;
    *:conda*) next="conda activate $ENV_NAME, then jupyter lab exercise.ipynb" ;;
    *) next="source .venv/bin/activate, then jupyter lab exercise.ipynb" ;;
esac
say "done. Next: $next"
