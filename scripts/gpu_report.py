"""On a GPU machine (`make gpu-report`): `make bench` rows on the GPU and experiment=mlp_best's accuracy,
appended to docs/performance.md under the card's name and the date."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from datetime import date
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("gpu_report: no CUDA GPU is visible")
    spec = importlib.util.spec_from_file_location("benchmark", REPO / "scripts" / "benchmark.py")
    assert spec is not None and spec.loader is not None
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    bench = benchmark.main(["--device", "cuda", "--data-dir", str(REPO / "data"), *sys.argv[1:]])
    command = [sys.executable, "-m", "lightning_template.train", "experiment=mlp_best", "trainer=gpu"]
    trained = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    accuracy = next(line.split()[1] for line in trained.stdout.splitlines() if line.startswith("  test/acc "))
    lines = [f"\n### {torch.cuda.get_device_name()}, {date.today()} (`make gpu-report`)\n"]
    lines += ["| loop | epoch s (median) | x bare | x plain |", "| --- | --- | --- | --- |"]
    for name, row in bench["rows"].items():
        epoch = sorted(row["epoch"])[len(row["epoch"]) // 2]
        lines.append(f"| {name} | {epoch:.3f} | {row['x_bare']:.2f} | {row['x_plain']:.2f} |")
    lines.append(f"\n`experiment=mlp_best trainer=gpu`: test accuracy {accuracy}.\n")
    with (REPO / "docs" / "performance.md").open("a") as file:
        file.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
