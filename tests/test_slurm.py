"""The SLURM launcher on a real cluster: `make test-slurm` brings up a one-node one (scripts/slurm_local.sh)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli


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


def test_a_two_job_array_runs_two_ddp_processes_per_job(tmp_path: Path, mnist_dir: Path) -> None:
    args = ["-m", "hydra/launcher=slurm", "trainer=ddp_cpu", "debug=fast", "optimizer.lr=0.01,0.001"]
    args += ["print_config=false", f"paths.log_dir={tmp_path}", f"paths.data_dir={mnist_dir}"]
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
