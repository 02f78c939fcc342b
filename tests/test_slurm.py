"""The SLURM launcher on a real cluster: `make test-slurm` brings up a one-node one (scripts/slurm_local.sh)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.test_data import fresh_data


def cluster_is_up() -> bool:
    """A SLURM node answers and is idle (scripts/slurm_local.sh up)."""
    if shutil.which("sinfo") is None:
        return False
    states = subprocess.run(["sinfo", "--noheader", "-o", "%t"], capture_output=True, text=True)
    return states.returncode == 0 and "idle" in states.stdout


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not cluster_is_up(), reason="no SLURM cluster: make test-slurm starts a local one"),
]


def test_a_two_job_array_runs_two_ddp_processes_per_job_on_a_fresh_clone(tmp_path: Path) -> None:
    data_dir = fresh_data(tmp_path / "data")  # only the .gz files: every process of both jobs sets it up
    args = ["-m", "hydra/launcher=slurm", "trainer=ddp_cpu", "debug=fast", "optimizer.lr=0.01,0.001"]
    args += ["print_config=false", f"paths.log_dir={tmp_path}", f"paths.data_dir={data_dir}"]
    result = run_cli("lightning_template.train", args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "debug" / "multiruns").iterdir()
    jobs = sorted(path for path in sweep.iterdir() if path.is_dir() and path.name.isdigit())
    assert [job.name for job in jobs] == ["0", "1"]
    for job in jobs:  # one run directory per job, with its checkpoints and final metrics
        assert sorted(p.name for p in (job / "checkpoints").iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
        assert 0 <= json.loads((job / "metrics.json").read_text())["test/acc"] <= 1
    logs = "".join(path.read_text() for path in (sweep / ".submitit").rglob("*_log.*"))
    assert logs.count("All distributed processes registered. Starting with 2 processes") == 2
    assert "sync_dist" not in logs  # every epoch-level value is logged as Lightning asks under DDP
    assert not list(data_dir.rglob("*.partial"))


def wait_for(find: Callable[[], Any], seconds: float = 180) -> Any:
    """Poll until `find()` returns something true; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (found := find()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(1)
    return found


def submitted_jobs(sweep: Path) -> list[str]:
    """The SLURM job ids of a sweep: submitit makes a folder for each."""
    return [path.name for path in sweep.glob(".submitit/*") if path.is_dir() and path.name[0].isdigit()]


def slurm(*command: str) -> str:
    """Run a SLURM command and return what it printed."""
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def test_sigusr1_saves_an_hpc_checkpoint_and_the_requeued_job_resumes_from_it(
    tmp_path: Path, mnist_dir: Path
) -> None:
    args = ["-m", "hydra/launcher=slurm", "trainer=cpu", "trainer.max_epochs=3", "data.batch_size=32"]
    args += ["logger=none", "callbacks.progress_bar=null", "print_config=false"]
    args += [f"paths.log_dir={tmp_path}", f"paths.data_dir={mnist_dir}"]
    command = [sys.executable, "-m", "lightning_template.train", *args]
    sweep = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL)
    try:
        first = wait_for(lambda: next(tmp_path.glob("train/multiruns/*/0/checkpoints/epoch_000.ckpt"), None))
        job = first.parents[1]  # training, one epoch done
        job_id = wait_for(lambda: submitted_jobs(job.parent))[0]
        slurm("scancel", "--signal=USR1", job_id)  # what SLURM sends 120 s before the time limit
        wait_for(lambda: list(job.glob("hpc_ckpt_*.ckpt")))  # Lightning saved, then requeued the job
        wait_for(lambda: slurm("squeue", "-h", "-j", job_id, "-o", "%t") == "PD")
        slurm("scontrol", "update", f"JobId={job_id}", "StartTime=now")  # skip SLURM's requeue delay
        assert sweep.wait(timeout=180) == 0
    finally:
        sweep.kill()
        subprocess.run(["scancel", "--quiet", "--partition=debug"])  # nothing left for the next test
    logs = "".join(path.read_text() for path in job.parent.glob(".submitit/*/*_log.*"))
    assert f"Restored all states from the checkpoint at {job}/hpc_ckpt_1.ckpt" in logs
    assert json.loads((job / "metrics.json").read_text())["test/acc"] > 0.5
