"""The benchmark script runs end to end and reports every row (a smoke test: no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmark_reports_every_row(tmp_path: Path, mnist_dir: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "benchmark.py"),
            "--epochs=3",
            "--limit-batches=4",
            "--no-full-run",
            f"--data-dir={mnist_dir}",
            f"--out={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (report,) = tmp_path.glob("bench_*.json")
    data = json.loads(report.read_text())
    names = [row["name"] for row in data["rows"]]
    assert names[0].startswith("template, default config")
    assert "Lightning, bare loop" in names
    for row in data["rows"]:
        assert row["epoch_s"]["n"] == 3
        assert row["plain_epoch_s"]["n"] == 3
        assert row["ratio"] > 0
    assert data["startup_to_first_step_s"] > 0
    assert data["rows"][0]["test_figures_s"] > 0
    assert "plain PyTorch loop" in result.stdout
