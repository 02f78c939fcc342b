"""What a user reads: no warning the template could avoid, and printed commands that run as printed."""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import run_cli

# A line holding one of these is a warning the user would have to read and judge.
SUSPECT = ("Warning", "warn(", "Skipping setting")
ALLOWED: dict[str, str] = {}  # a part of an allowed line: why it cannot be avoided
DebugRun = tuple[Path, list[str], subprocess.CompletedProcess[str]]  # its folder, paths overrides, output
pytestmark = pytest.mark.xdist_group("test_output")  # one worker runs the module's `debug=fast` train once


def suspect_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    lines = (result.stdout + result.stderr).splitlines()
    return [
        line
        for line in lines
        if any(word in line for word in SUSPECT) and not any(part in line for part in ALLOWED)
    ]


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> DebugRun:
    """A `debug=fast` train as a user starts it."""
    tmp_path = tmp_path_factory.mktemp("output")
    paths = [f"paths.data_dir={mnist_dir}", f"paths.log_dir={tmp_path / 'logs'}"]
    train = run_cli("lightning_template.train", ["debug=fast", *paths], cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    return tmp_path, paths, train


@pytest.mark.slow
def test_train_eval_and_predict_print_no_avoidable_warning(debug_run: DebugRun) -> None:
    tmp_path, paths, train = debug_run
    checkpoint = next((tmp_path / "logs" / "debug" / "runs").glob("*/checkpoints/last.ckpt"))
    digit = Image.new("L", (28, 28))
    digit.paste(255, (12, 6, 16, 22))  # a white stroke on black: a "1"
    digit.save(tmp_path / "digit.png")
    results = {
        "train": train,
        "eval": run_cli("lightning_template.eval", [f"ckpt_path={checkpoint}", *paths], cwd=tmp_path),
        "predict": run_cli(
            "lightning_template.predict",
            [f"ckpt_path={checkpoint}", "inputs=digit.png", *paths],
            cwd=tmp_path,
        ),
    }  # a sweep's output is checked in test_sweeps.py
    for name, result in results.items():
        assert result.returncode == 0, f"{name}:\n{result.stderr}"
        assert suspect_lines(result) == [], name


@pytest.mark.slow
def test_the_printed_tensorboard_command_starts_it_from_a_fresh_shell(
    debug_run: DebugRun,
) -> None:
    tmp_path, _, train = debug_run
    printed = dict(line.split(": ", 1) for line in train.stdout.splitlines() if ": " in line)
    elsewhere, bare_env = tmp_path / "elsewhere", {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    elsewhere.mkdir()

    banner = tmp_path / "tensorboard.log"  # a file, so that waiting for it never blocks on a read
    with banner.open("w") as stderr:
        tensorboard = subprocess.Popen(
            [*shlex.split(printed["TensorBoard"]), "--port", "0"],
            cwd=elsewhere,
            env=bare_env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 120
        while (
            "http://" not in banner.read_text() and time.monotonic() < deadline and tensorboard.poll() is None
        ):
            time.sleep(0.2)
        assert "http://" in banner.read_text(), (
            banner.read_text()
        )  # "TensorBoard 2.x at http://localhost:<port>/"
    finally:
        tensorboard.kill()
        tensorboard.wait()
