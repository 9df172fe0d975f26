"""The run-directory lock: one live process per run id, released however its owner exits."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from benchmark.runlock import RunInProgressError, lock_holder, run_lock


def test_second_holder_is_refused_with_the_owner_named_and_lock_is_released_on_exit(tmp_path):
    run_dir = tmp_path / "abc123"
    with run_lock(run_dir):
        assert lock_holder(run_dir)["pid"] == os.getpid()
        with pytest.raises(RunInProgressError, match=rf"run abc123 is already running in process {os.getpid()}"):
            with run_lock(run_dir):
                pass
    assert lock_holder(run_dir) is None
    with run_lock(run_dir):  # free again
        pass


def test_lock_is_released_when_its_process_is_killed(tmp_path):
    run_dir = tmp_path / "run"
    code = ("import sys, time; from benchmark.runlock import run_lock\n"
            f"with run_lock({str(run_dir)!r}):\n    print('locked', flush=True); time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert lock_holder(run_dir)["pid"] == proc.pid
        with pytest.raises(RunInProgressError, match=str(proc.pid)):
            with run_lock(run_dir):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert lock_holder(run_dir) is None  # no stale lock after SIGKILL
    with run_lock(run_dir):
        assert lock_holder(run_dir)["pid"] == os.getpid()


def test_bench_run_on_a_run_id_another_process_runs_is_a_clear_error_and_touches_nothing(tmp_path, capsys):
    from benchmark.cli import main
    from benchmark.config import compose, run_id

    overrides = ["train.max_epochs=1"]
    cfg = compose(backbone="gru4rec", denoiser="none", dataset="synthetic", profile="smoke", overrides=overrides)
    run_dir = tmp_path / "runs" / run_id(cfg)
    with run_lock(run_dir):
        code = main(["run", "--backbone", "gru4rec", "--denoiser", "none", "--dataset", "synthetic", "--profile",
                     "smoke", "--runs-dir", str(tmp_path / "runs"), *overrides])
    assert code == 2
    err = capsys.readouterr().err
    assert f"run {run_dir.name} is already running in process {os.getpid()}" in err
    assert sorted(p.name for p in run_dir.iterdir()) == ["RUNNING"]  # no config, logs or checkpoints written
