"""The notebooks: built from solution.py, in sync, clean, and the solution runs top to bottom."""

import ast
import json
import re
from pathlib import Path

import build_notebooks  # from scripts/ (pytest's pythonpath)
import pytest
import run_exercise

ROOT = Path(__file__).resolve().parent.parent


def cells(name):
    return json.loads((ROOT / name).read_text())["cells"]


def tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def test_committed_notebooks_match_a_fresh_build():
    assert build_notebooks.main(["--check"]) == 0, "run `make notebooks` and commit"


def test_exercise_has_no_solution_cells_and_solution_has_no_task_cells():
    assert not [c for c in cells("exercise.ipynb") if "solution" in tags(c)]
    assert not [c for c in cells("solution.ipynb") if "task" in tags(c)]
    assert [c for c in cells("exercise.ipynb") if "task" in tags(c)], "the exercise has no tasks"


def test_every_task_pairs_with_a_solution():
    source = (ROOT / "solution.py").read_text()
    assert source.count('# %% tags=["task"]') == source.count('# %% tags=["solution"]')


def test_every_questions_block_is_followed_by_an_answer_in_the_solution_only():
    notebook = cells("solution.ipynb")
    questions = [i for i, c in enumerate(notebook)
                 if c["cell_type"] == "markdown" and "Questions" in "".join(c["source"])]
    assert questions, "the notebook asks no questions"
    for index in questions:
        answer = notebook[index + 1]
        assert answer["cell_type"] == "markdown" and "solution" in tags(answer), index
        assert "".join(answer["source"]).startswith("**Answer"), index
    assert not [c for c in cells("exercise.ipynb") if "".join(c["source"]).startswith("**Answer")]


def test_every_task_stub_raises_not_implemented_error_naming_its_task():
    stubs = [c for c in cells("exercise.ipynb") if "task" in tags(c)]
    for cell in stubs:
        code = "".join(cell["source"])
        assert re.search(r'NotImplementedError\(\s*"Task \d\.\d: ', code), code
        assert "= ..." not in code and "return ..." not in code, code


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


MAX_EXERCISE_WORDS = 4500
"""The course's limit on the exercise's reading: words of all its markdown cells."""


def test_exercise_markdown_stays_within_the_courses_word_limit():
    words = sum(len(re.findall(r"\S+", "".join(cell["source"])))
                for cell in cells("exercise.ipynb") if cell["cell_type"] == "markdown")
    assert words <= MAX_EXERCISE_WORDS, (
        f"exercise.ipynb's markdown has {words} words, over the course's limit of "
        f"{MAX_EXERCISE_WORDS}; shorten solution.py's markdown and rebuild the notebooks")



# --- running the notebooks: each part after Part 0 alone, in an emptied kernel ------------------

MISTAKES = {
    "Task 1.2": ([("2 * (image - p_low)", "(image - p_low)")], "your normalise_stain maps"),
    "Task 1.5": ([("real_feature.detach()", "real_feature")],
                 "a gradient reached the real features"),
    "Task 1.6": ([("fake.detach()", "fake"),
                  ("loss_D.backward()", "loss_D.backward(retain_graph=True)")], "fake.detach()"),
    # the checks' own wrong-answer suite is tests/test_tasks.py; here one per task, end to end
    "Task 3.1": ([("iou >= threshold", "iou > threshold")], "not >"),
    "Task 4.1": ([("min(max(int(c) - size // 2, 0), length - size)", "int(c) - size // 2")],
                 "it should be rows"),
    "Task 5.1": ([("ddof=1", "ddof=0")], "use the sample standard deviation"),
    "Task 5.2": ([("nuclei.trust < threshold", "nuclei.trust <= threshold")], "not <="),
}
"""Per task: edits that put one typical mistake into the solution, and words its check's
message must then contain."""


def notebook_parts(name):
    import nbformat

    notebook = nbformat.read(ROOT / name, as_version=4)
    return notebook, build_notebooks.split_parts(notebook.cells)


@pytest.fixture(scope="module")
def notebook_data(tmp_path_factory):
    """A small synthetic dataset, large enough for the quick profile's 128-pixel crops."""
    from pix2pixhd.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("notebook_data"), n_train=4, n_val=2,
                        n_test=2, size=256, seed=3)


@pytest.fixture(scope="module")
def kernel():
    """One Jupyter kernel for this module's runs (one per xdist worker). Each run starts with
    `fresh_start`: an empty namespace, as after a restart, without paying for a new kernel and
    its imports (about 5 s a run). What the kernel inherits: CPU only, no windows."""
    import nbclient
    import nbformat

    notebook = nbformat_read("solution.ipynb")
    client = nbclient.NotebookClient(
        nbformat.v4.new_notebook(metadata=notebook.metadata), timeout=600,
        kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"CUDA_VISIBLE_DEVICES": "", "MPLBACKEND": "Agg",
                            "PIX2PIXHD_HEADLESS": "1"}.items():
            patch.setenv(name, value)
        with client.setup_kernel():
            yield client


@pytest.fixture
def quick_profile(notebook_data, tmp_path):
    """What Part 0 reads from the environment: the quick profile, results under tmp_path."""
    return {"PIX2PIXHD_PROFILE": "quick", "PIX2PIXHD_DATA": str(notebook_data),
            "PIX2PIXHD_RESULTS": str(tmp_path / "results"),
            "PIX2PIXHD_RUNS": str(tmp_path / "runs")}


def fresh_start(environment):
    """A cell that empties the kernel's namespace and sets the environment Part 0 reads."""
    import nbformat

    return nbformat.v4.new_code_cell(
        f"%reset -f\nimport os\nos.environ.update({environment!r})\ndel os")


def restart(kernel, cells_, environment):
    """Empty the shared kernel's namespace, set what Part 0 reads, and give it `cells_` (which
    nbclient indexes) to run."""
    kernel.nb.cells = [*cells_, fresh_start(environment)]
    kernel.execute_cell(kernel.nb.cells[-1], len(cells_))


def run_cells(kernel, cells_, environment):
    """A restart, then `cells_` in order, in the shared kernel."""
    restart(kernel, cells_, environment)
    for index, cell in enumerate(cells_):
        kernel.execute_cell(cell, index)


@pytest.mark.slow
@pytest.mark.parametrize("part", ["Part 2", "Summary"])
def test_each_part_of_the_solution_runs_after_part_0_alone(part, kernel, quick_profile, tmp_path):
    """The parts without tasks; those with tasks run to their end, solved, in
    `test_exercise_stubs_raise_and_checks_reject_a_wrong_answer`."""
    notebook, parts = notebook_parts("solution.ipynb")
    run_cells(kernel, parts["Part 0"] + parts[part], quick_profile)
    if part == "Summary":
        summary = (tmp_path / "results" / "summary.md").read_text()
        assert "no training run" in summary and "Part 4 compares them" in summary


def sections():
    _, cells_ = notebook_parts("solution.ipynb")
    return list(build_notebooks.split_sections([c for part in cells_.values() for c in part]))


def test_part_1_has_its_numbered_sections():
    assert sections() == ["1.1", "1.2", "1.3", "1.4", "1.5", "1.6", "1.7", "1.8"]


@pytest.mark.slow
@pytest.mark.parametrize("section", sections())
def test_each_numbered_section_runs_after_part_0_alone(section, kernel, quick_profile, tmp_path):
    """A restart, then Part 0, then this section: nothing it needs comes from the sections
    before it. 1.7's training cell run a second time resumes the run, never overwrites it."""
    notebook = nbformat_read("solution.ipynb")
    parts = build_notebooks.split_parts(notebook.cells)
    chosen = build_notebooks.split_sections(notebook.cells)[section]
    run_cells(kernel, parts["Part 0"] + chosen, quick_profile)
    if section == "1.7":
        run = tmp_path / "runs" / "my_gan" / "latest.pt"
        before = run.read_bytes()
        training = next(c for c in chosen if "choose_run(MY_RUN)" in c.source)
        kernel.execute_cell(training, kernel.nb.cells.index(training))
        said = "".join(output.get("text", "") for output in training.outputs)
        assert "resuming it" in said and run.read_bytes() == before


def nbformat_read(name):
    import nbformat

    return nbformat.read(ROOT / name, as_version=4)


@pytest.mark.slow
def test_an_unknown_profile_stops_part_0_with_the_profiles_it_accepts(kernel, quick_profile):
    from nbclient.exceptions import CellExecutionError

    notebook, parts = notebook_parts("solution.ipynb")
    with pytest.raises(CellExecutionError) as raised:
        run_cells(kernel, parts["Part 0"], quick_profile | {"PIX2PIXHD_PROFILE": "fast"})
    assert raised.value.ename == "ValueError"
    assert all(name in raised.value.evalue for name in ("'fast'", "quick", "course", "pretrained"))


@pytest.mark.slow
@pytest.mark.parametrize("part", ["Part 1", "Part 3", "Part 4", "Part 5"])
def test_exercise_stubs_raise_and_checks_reject_a_wrong_answer(part, kernel, quick_profile):
    """Each stub's check raises NotImplementedError naming the task, a wrong answer fails the
    check with its message, and the solution passes it; then the part runs to its end with the
    solutions in place: the solution's part, after Part 0 alone."""
    from nbclient.exceptions import CellExecutionError

    notebook, parts = notebook_parts("exercise.ipynb")
    solutions = [c for c in notebook_parts("solution.ipynb")[1][part]
                 if "solution" in tags(c) and c["cell_type"] == "code"]
    cells_ = parts["Part 0"] + parts[part]
    tasks = [i for i, c in enumerate(cells_) if "task" in tags(c)]
    assert tasks and len(tasks) == len(solutions), f"{part}: tasks and solutions do not pair"
    restart(kernel, cells_, quick_profile)
    index = 0
    for task, solution in zip(tasks, solutions, strict=True):
        while index < task:
            kernel.execute_cell(cells_[index], index)
            index += 1
        stub, check = cells_[task], cells_[task + 1]
        name = re.search(r"Task \d\.\d", "".join(stub["source"])).group(0)
        attempts = [(stub, "NotImplementedError", name),
                    (with_mistake(solution, *MISTAKES[name]), "TaskCheckFailed",
                     MISTAKES[name][1])]
        for answer, error, words in attempts:
            kernel.execute_cell(answer, task)
            with pytest.raises(CellExecutionError) as raised:
                kernel.execute_cell(check, task + 1)
            assert raised.value.ename == error, f"{name}: {raised.value}"
            assert words in raised.value.evalue, f"{name}: {raised.value.evalue}"
        kernel.execute_cell(solution, task)
        kernel.execute_cell(check, task + 1)
        index = task + 2
    for rest in range(index, len(cells_)):
        kernel.execute_cell(cells_[rest], rest)


def with_mistake(cell, edits, words):
    """A copy of a solution cell with the edits made (each must apply)."""
    import nbformat

    source = "".join(cell["source"])
    for old, new in edits:
        assert old in source, f"the solution no longer contains {old!r}; update MISTAKES"
        source = source.replace(old, new)
    return nbformat.v4.new_code_cell(source)


def test_every_part_has_a_start_here_cell_and_run_exercise_refuses_an_unknown_part(capsys):
    notebook, parts = notebook_parts("solution.ipynb")
    assert list(parts) == ["Part 0", "Part 1", "Part 2", "Part 3", "Part 4", "Part 5", "Summary"]
    for name in ("Part 1", "Part 2", "Part 3", "Part 4", "Part 5"):
        first_code = next(c for c in parts[name] if c.cell_type == "code")
        assert first_code.source.startswith("# start here"), name
    with pytest.raises(SystemExit):
        run_exercise.main(["--part", "Part 9"])
    assert "'Part 3'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_exercise.main(["--section", "1.9"])
    assert "1.6" in capsys.readouterr().err
