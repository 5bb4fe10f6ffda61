"""The notebooks: built from solution.py, in sync, clean, and the solution runs top to bottom."""

import ast
import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_build_script():
    spec = importlib.util.spec_from_file_location("build_notebooks",
                                                  ROOT / "scripts" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cells(name):
    return json.loads((ROOT / name).read_text())["cells"]


def tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def test_committed_notebooks_match_a_fresh_build():
    assert load_build_script().main(["--check"]) == 0, "run `make notebooks` and commit"


def test_exercise_has_no_solution_cells_and_solution_has_no_task_cells():
    assert not [c for c in cells("exercise.ipynb") if "solution" in tags(c)]
    assert not [c for c in cells("solution.ipynb") if "task" in tags(c)]
    assert [c for c in cells("exercise.ipynb") if "task" in tags(c)], "the exercise has no tasks"


def test_every_task_pairs_with_a_solution():
    source = (ROOT / "solution.py").read_text()
    assert source.count('tags=["task"]') == source.count('tags=["solution"]')


@pytest.mark.parametrize("name", ["exercise.ipynb", "solution.ipynb"])
def test_code_cells_are_valid_python_and_nothing_is_stored(name):
    notebook = json.loads((ROOT / name).read_text())
    assert notebook["metadata"]["kernelspec"]["name"] == "06_image_translation"
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        assert cell["outputs"] == [] and cell["execution_count"] is None
        code = "".join(cell["source"])
        code = "\n".join(line for line in code.splitlines() if not line.startswith("%"))
        ast.parse(code)


def test_every_image_the_text_references_exists():
    text = (ROOT / "solution.py").read_text()
    paths = re.findall(r"(?:src=\"|\]\()((?:imgs)/[^\")]+)", text)
    assert paths, "the notebook shows no figure from imgs/"
    for path in paths:
        assert (ROOT / path).is_file(), path


@pytest.mark.slow
def test_solution_notebook_runs_top_to_bottom_in_a_kernel(tmp_path, monkeypatch):
    """The quick profile on CPU, on a small synthetic dataset, with the pre-trained models."""
    import nbclient
    import nbformat

    from pix2pixhd.synthetic import make_dataset

    data = make_dataset(tmp_path / "data", n_train=16, n_val=4, n_test=4, size=256, seed=3)
    monkeypatch.setenv("PIX2PIXHD_PROFILE", "quick")
    monkeypatch.setenv("PIX2PIXHD_DATA", str(data))
    monkeypatch.setenv("PIX2PIXHD_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("PIX2PIXHD_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("PIX2PIXHD_HEADLESS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    notebook = nbformat.read(ROOT / "solution.ipynb", as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    summary = (tmp_path / "results" / "summary.md").read_text()
    assert "Pix2PixHD (GAN)" in summary and "regression (L1)" in summary
    assert len(list((tmp_path / "results").glob("*.png"))) >= 15
