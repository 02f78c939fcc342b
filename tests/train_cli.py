"""Test helpers for runs started the way users start them: `python -m lightning_template.train` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]


def train_cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the train entry point with `args` in `cwd`; the jobs can import test-only callbacks from tests/."""
    env = {**os.environ, **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env.pop("PROJECT_ROOT", None)
    return subprocess.run(
        [sys.executable, "-m", "lightning_template.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,  # a process waiting for a peer that never comes would otherwise hang the suite
    )


def last_scalar(run_dir: Path, tag: str) -> float:
    """The last value of a scalar in a run's TensorBoard events, read with TensorBoard's own reader."""
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return events.Scalars(tag)[-1].value
