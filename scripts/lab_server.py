"""A private JupyterLab server on 127.0.0.1, for the server test and the browser check.

    with LabServer(ROOT, tmp) as server:
        server.get("/api/contents/exercise.ipynb")

The server is the `jupyter lab` command next to this Python, started with a token on a free
port. Its Jupyter folders (config, data, runtime, IPython), its log and the notebooks'
checkpoints live in a folder of the caller's, where the kernel `06_image_translation` is
registered for this Python: nothing is read from or written to the user's own Jupyter set-up
or the served folder. Leaving the block stops the server and every process it started
(kernels included), cleanly if it can and by signal if it must.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil  # an ipykernel dependency

KERNEL = "06_image_translation"

SETTINGS = {  # JupyterLab user settings
    # no news or update checks: no internet, no pop-up over the page
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                    "checkForUpdates": False},
    # a browser that only looks must not write the notebook back into the repository
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def private_jupyter_env(folder: Path, python: str = sys.executable) -> dict[str, str]:
    """os.environ with every Jupyter and IPython folder under `folder`, and the course kernel
    registered there for `python` (the same `ipykernel install` that setup.sh runs)."""
    folder = Path(folder)
    env = dict(os.environ)
    for name, sub in [("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                      ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython"),
                      ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"),
                      ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces")]:
        env[name] = str(folder / sub)
        (folder / sub).mkdir(parents=True, exist_ok=True)
    # JUPYTER_PATH is searched first, so this kernel wins over one registered elsewhere
    env["JUPYTER_PATH"] = str(folder / "share" / "jupyter")
    subprocess.run([python, "-m", "ipykernel", "install", "--prefix", str(folder),
                    "--name", KERNEL, "--display-name", f"Python ({KERNEL})"],
                   env=env, check=True, capture_output=True)
    for plugin, values in SETTINGS.items():
        package, name = plugin.rsplit("/", 1)
        path = folder / "lab-settings" / package / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    return env


class LabServer:
    """`jupyter lab --no-browser` serving `root`, its own files in `folder`; `env` is added to
    the environment of the server and so of its kernels."""

    def __init__(self, root: Path, folder: Path, env: dict[str, str] | None = None,
                 start_timeout: float = 180):
        self.root, self.folder = Path(root), Path(folder)
        self.env = {**private_jupyter_env(self.folder), **(env or {})}
        self.log = self.folder / "jupyter.log"
        self.start_timeout = start_timeout
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        jupyter = Path(sys.executable).parent / "jupyter"
        if not jupyter.exists():
            raise FileNotFoundError(f"{jupyter} is missing: install the notebook extra "
                                    "(sh setup.sh, or pip install -e '.[notebook]')")
        # containers (CI) often run as root, where the server refuses to start unless told
        as_root = ["--allow-root"] if os.geteuid() == 0 else []
        return [str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                "--port-retries=0", f"--ServerApp.root_dir={self.root}",
                f"--IdentityProvider.token={self.token}", "--LabApp.news_url=None",
                # opening a notebook writes a checkpoint, by default next to it
                f"--FileCheckpoints.checkpoint_dir={self.folder / 'checkpoints'}",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", *as_root]

    def __enter__(self) -> LabServer:
        with open(self.log, "wb") as log:
            # its own session, so that a kill reaches the server's whole process group
            self.process = subprocess.Popen(self.command(), env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.process.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                if self.get("/api/status").status == 200:
                    return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"jupyter lab did not answer on {self.url} within "
                           f"{self.start_timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 60):
        """One HTTP request with the token; the response (read it before the next call)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Authorization": f"token {self.token}"})
        return urllib.request.urlopen(request, timeout=timeout)

    def get(self, path: str, timeout: float = 60):
        return self.request("GET", path, timeout=timeout)

    def descendants(self) -> list[psutil.Process]:
        """Every process the server started and that still runs (its kernels)."""
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def shutdown(self, timeout: float = 60) -> list[psutil.Process]:
        """Ask the server to stop (it shuts its kernels down first); the processes that the
        server had started and that still run afterwards (none, if it stopped cleanly)."""
        children = self.descendants()
        self.request("POST", "/api/shutdown", timeout=timeout).read()
        self.process.wait(timeout)
        _, alive = psutil.wait_procs(children, timeout=10)
        return alive

    def stop(self) -> None:
        """Stop the server and what it started, by signal if the server is still running."""
        if self.process is None:
            return
        children = self.descendants()
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        # kernels run in sessions of their own, out of reach of the signal above
        for child in children:
            try:
                _signal_group(child.pid, signal.SIGTERM)
                child.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(children, timeout=10)
        for child in alive:
            child.kill()


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
