"""The course flow through a real Jupyter server: `jupyter lab` serves the exercise, starts the
course kernel over its REST API and runs Part 0 over the kernel's websocket, as a browser does."""

import json
import re
import sys
import uuid
from pathlib import Path

import build_notebooks  # from scripts/ (pytest's pythonpath)
import nbformat
import psutil
import pytest
import websocket  # websocket-client, a jupyter_server dependency
from lab_server import KERNEL, LabServer

ROOT = Path(__file__).resolve().parent.parent
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def server(tiny_dataset, tmp_path):
    """A lab server on the repository with private Jupyter folders; Part 0 reads its data,
    profile and output folders from the environment, which kernels inherit."""
    env = {"PIX2PIXHD_PROFILE": "quick", "PIX2PIXHD_DATA": str(tiny_dataset),
           "PIX2PIXHD_RESULTS": str(tmp_path / "results"), "PIX2PIXHD_RUNS": str(tmp_path / "runs"),
           "PIX2PIXHD_HEADLESS": "1", "CUDA_VISIBLE_DEVICES": "", "MPLBACKEND": "Agg"}
    with LabServer(ROOT, tmp_path / "jupyter", env) as running:
        yield running


def execute(channel, session, code, timeout=300):
    """Run `code` through the kernel's websocket; (the execute reply's content, the outputs)
    in the order the kernel sent them."""
    msg_id = uuid.uuid4().hex
    channel.send(json.dumps({
        "channel": "shell", "parent_header": {}, "metadata": {}, "buffers": [],
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": session,
                   "username": "test", "version": "5.3"},
        "content": {"code": code, "silent": False, "store_history": True,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
    channel.settimeout(timeout)
    reply, outputs, idle = None, [], False
    while reply is None or not idle:
        frame = channel.recv()
        if isinstance(frame, bytes):  # messages with binary buffers; Part 0 sends none
            continue
        message = json.loads(frame)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        kind = message["header"]["msg_type"]
        if kind == "execute_reply":
            reply = message["content"]
        elif kind == "status":
            idle = message["content"]["execution_state"] == "idle"
        elif kind in ("stream", "display_data", "execute_result", "error"):
            outputs.append({"output_type": kind, **message["content"]})
    return reply, outputs


def output_text(outputs):
    return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in outputs)


@pytest.mark.slow
def test_jupyter_lab_serves_the_exercise_and_runs_part_0_in_the_course_kernel(server):
    # the front ends answer: JupyterLab's page with its script bundle, and the classic view
    page = server.get("/lab").read().decode()
    assert "<title>JupyterLab</title>" in page
    bundle = re.search(r'<script[^>]+src="([^"]+\.js[^"]*)"', page)
    assert bundle and server.get(bundle.group(1)).status == 200, "JupyterLab's script is missing"
    assert server.get("/tree").status == 200, "the notebook interface is not installed"

    before = sorted(ROOT.iterdir())
    model = json.load(server.get("/api/contents/exercise.ipynb"))
    assert model["type"] == "notebook"
    notebook = nbformat.from_dict(model["content"])
    assert notebook.metadata.kernelspec.name == KERNEL
    part_0 = [c for c in build_notebooks.split_parts(notebook.cells)["Part 0"]
              if c.cell_type == "code"]
    assert part_0, "exercise.ipynb has no Part 0 code"

    specs = json.load(server.get("/api/kernelspecs"))["kernelspecs"]
    assert specs[KERNEL]["spec"]["argv"][0] == sys.executable

    # what JupyterLab does on opening the notebook: a session, with the kernel it names
    session = json.load(server.request("POST", "/api/sessions", {
        "path": "exercise.ipynb", "name": "exercise.ipynb", "type": "notebook",
        "kernel": {"name": notebook.metadata.kernelspec.name}}))
    kernel_id = session["kernel"]["id"]
    channel = websocket.create_connection(
        f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels"
        f"?session_id={session['id']}", header=[f"Authorization: token {server.token}"],
        timeout=120)
    try:
        for index, cell in enumerate(part_0):
            reply, outputs = execute(channel, session["id"], cell.source)
            errors = [o for o in outputs if o["output_type"] == "error"]
            assert reply["status"] == "ok" and not errors, (
                f"Part 0, code cell {index}: {reply.get('ename')}: {reply.get('evalue')}\n"
                + ANSI_COLOUR.sub("", "\n".join("\n".join(e["traceback"]) for e in errors)))
            if "PROFILE = " in cell.source:
                assert "device cpu, profile quick" in output_text(outputs), outputs
        _, outputs = execute(channel, session["id"], "import json, os, sys; "
                             "print(json.dumps([os.getpid(), sys.executable, os.getcwd()]))")
        kernel_pid, python, cwd = json.loads(output_text(outputs))
    finally:
        channel.close()
    assert (python, cwd) == (sys.executable, str(ROOT))
    assert Path(server.env["PIX2PIXHD_RESULTS"]).is_dir()  # Part 0 made it there...
    assert sorted(ROOT.iterdir()) == before  # ...and wrote nothing into the repository

    kernel = psutil.Process(kernel_pid)
    assert kernel in server.descendants()
    left = server.shutdown()
    assert server.process.returncode == 0, server.log_tail()
    assert not left and not kernel.is_running(), f"still running after shutdown: {left}"
