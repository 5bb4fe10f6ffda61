"""One writer per folder: the second command names the first, and a dead holder's lock is taken."""

import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from pix2pixhd.files import FolderBusyError, folder_lock, lock_path
from pix2pixhd.synthetic import make_dataset


def test_a_second_lock_names_the_process_and_command_holding_it(tmp_path):
    with folder_lock(tmp_path / "run", "pix2pixhd train --name run"):
        with pytest.raises(FolderBusyError) as error, folder_lock(tmp_path / "run"):
            pass
    message = str(error.value)
    assert f"in use by process {os.getpid()} on " in message
    assert "(pix2pixhd train --name run, since " in message and "\n" not in message
    with folder_lock(tmp_path / "run"):  # released: free again
        pass
    assert not lock_path(tmp_path / "run").exists()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path, caplog):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pix2pixhd.files import folder_lock\n"
         f"with folder_lock({str(tmp_path / 'data')!r}, 'pix2pixhd data synthetic'):\n"
         "    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=os.environ | {"PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderBusyError, match=f"process {holder.pid} "):
            make_dataset(tmp_path / "data", n_train=1, n_val=1, n_test=1, size=16)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert str(holder.pid) in lock_path(tmp_path / "data").read_text()  # left behind, stale
    with caplog.at_level(logging.INFO, logger="pix2pixhd.files"):
        make_dataset(tmp_path / "data", n_train=1, n_val=1, n_test=1, size=16)
    assert f"left by process {holder.pid} (pix2pixhd data synthetic), which is gone" in caplog.text
    assert (tmp_path / "data" / "dataset.json").is_file()
    assert not lock_path(tmp_path / "data").exists()


def test_a_dataset_being_written_is_not_written_by_a_second_run(tmp_path):
    make_dataset(tmp_path / "data", n_train=1, n_val=1, n_test=1, size=16, seed=0)
    before = {p: p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file()}
    with folder_lock(tmp_path / "data", "pix2pixhd data synthetic --seed 0"):
        with pytest.raises(FolderBusyError, match="data synthetic --seed 0"):
            make_dataset(tmp_path / "data", n_train=2, n_val=1, n_test=1, size=16, seed=1)
    assert {p: p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file()} == before


def test_a_dangling_link_is_named_before_anything_is_made(tmp_path):
    from pix2pixhd.layout import DataError

    (tmp_path / "data").symlink_to(tmp_path / "scratch" / "data")
    with pytest.raises(DataError, match="data is a symbolic link to .*, which does not exist"):
        make_dataset(tmp_path / "data", n_train=1, n_val=1, n_test=1, size=16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_the_folders_a_lock_made_go_with_it_unless_something_was_written(tmp_path):
    with folder_lock(tmp_path / "a" / "b" / "run"):
        assert (tmp_path / "a" / "b").is_dir()
    assert list(tmp_path.iterdir()) == []  # a command that failed leaves no trace
    with folder_lock(tmp_path / "a" / "b" / "run"):
        (tmp_path / "a" / "b" / "run").mkdir()
        (tmp_path / "a" / "b" / "run" / "latest.pt").write_bytes(b"weights")
    assert (tmp_path / "a" / "b" / "run" / "latest.pt").is_file()
    (tmp_path / "kept").mkdir()
    with folder_lock(tmp_path / "kept" / "run"):
        pass
    assert (tmp_path / "kept").is_dir()  # there before: not the lock's to remove


def test_a_stopped_command_removes_its_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from pix2pixhd.files import folder_lock, "
         "stop_cleanly_on_sigterm\nstop_cleanly_on_sigterm()\n"
         f"with folder_lock({str(tmp_path / 'data')!r}, 'pix2pixhd data download'):\n"
         "    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=os.environ | {"PYTHONPATH": os.getcwd()})
    assert holder.stdout.readline().strip() == "locked"
    assert lock_path(tmp_path / "data").exists()
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(timeout=30) == 128 + signal.SIGTERM
    assert not lock_path(tmp_path / "data").exists()


def test_a_stopped_data_command_leaves_no_lock_and_no_partial_dataset(tmp_path):
    command = subprocess.Popen(
        [sys.executable, "-m", "pix2pixhd", "data", "synthetic", "--out", str(tmp_path / "data"),
         "--n-train", "5000", "--size", "64"],
        stderr=subprocess.DEVNULL, env=os.environ | {"PYTHONPATH": os.getcwd()})
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".data.*.part")) and time.monotonic() < deadline:
            time.sleep(0.05)  # until it is writing
        assert lock_path(tmp_path / "data").exists()
    finally:
        command.send_signal(signal.SIGTERM)
    assert command.wait(timeout=30) == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir()) == []
