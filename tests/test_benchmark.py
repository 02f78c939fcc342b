"""scripts/benchmark.py (`make bench`) still runs against the package: a smoke test of a few batches."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO


def test_benchmark_smoke(mnist_dir: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("benchmark", REPO / "scripts" / "benchmark.py")
    assert spec is not None and spec.loader is not None
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    argv = ["--limit-batches", "3", "--epochs", "3", "--no-full-run", "--no-startup"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy machine, threads that wait for each other make this 3x slower
    try:
        results = benchmark.main([*argv, "--data-dir", str(mnist_dir), "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)

    assert list(results["rows"]) == list(benchmark.ROWS)
    for name, row in results["rows"].items():
        assert len(row["epoch"]) == len(row["plain"]) == 3, name
        assert all(seconds > 0 for seconds in row["epoch"] + row["plain"]), name
        assert row["x_plain"] > 0 and row["x_bare"] > 0, name
    default = results["rows"]["template, default config"]
    assert len(default["validation"]) == len(default["test"]) == 3
    assert all(seconds > 0 for seconds in default["validation"] + default["test"])
    [written] = tmp_path.glob("bench_*.json")
    assert json.loads(written.read_text())["rows"].keys() == results["rows"].keys()


@pytest.mark.slow
def test_benchmark_images_smoke(tmp_path: Path) -> None:
    """scripts/benchmark_images.py on 40 images, warnings as errors: its three rows, with numbers, in markdown."""
    script = REPO / "scripts" / "benchmark_images.py"
    folder, markdown = tmp_path / "images", tmp_path / "bench.md"
    argv = ["--images", "40", "--workers", "1", "--folder", folder, "--markdown", markdown, "--clean"]
    command = [sys.executable, "-W", "error", script, *argv]
    result = subprocess.run(command, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "template second start / first start" in result.stdout
    lines = [line.strip("|").split("|") for line in markdown.read_text().splitlines() if "|" in line]
    header, _, *rows = ([cell.strip() for cell in line] for line in lines)
    names = [row[0] for row in rows]
    assert names == ["baseline: ImageFolder + DataLoader", "template, first start", "template, second start"]
    for row in rows:
        values = dict(zip(header[1:], (float(cell.replace(",", "")) for cell in row[1:]), strict=True))
        assert all(value > 0 for key, value in values.items() if key != "largest other MiB"), row  # 0: none
    assert not folder.exists()  # --clean
