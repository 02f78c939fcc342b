"""End to end: train writes what it promises, eval reproduces it, the command line and sweeps work."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_template.eval import evaluate
from lightning_template.train import train


def _events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    return accumulator


def test_fast_run_writes_checkpoints_and_tensorboard(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = make_cfg("train", ["debug=fast", "trainer.limit_test_batches=1.0"])
    metrics = train(cfg)

    assert {"train/loss", "train/acc", "val/acc", "val/acc_best", "test/acc", "test/loss"} <= set(metrics)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    checkpoints = tmp_path / "checkpoints"
    assert (checkpoints / "last.ckpt").is_file()
    assert (checkpoints / "epoch_000.ckpt").is_file()

    events = _events(tmp_path)
    scalars = set(events.Tags()["scalars"])
    assert {
        "train/loss_step",
        "train/loss",
        "train/acc",
        "val/acc",
        "val/acc_best",
        "test/acc",
        "hp_metric",
    } <= scalars
    assert events.Scalars("train/loss_step")  # logged per step (debug=fast logs every step)
    assert events.Scalars("test/acc")[-1].value == pytest.approx(metrics["test/acc"])
    # The HPARAMS tab: a session with the run's config and the metrics to compare runs by.
    plugin = events.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in plugin and "_hparams_/session_start_info" in plugin

    # eval reproduces test/acc from the checkpoint alone (network and standardization included).
    eval_cfg = make_cfg("eval", [f"ckpt_path={checkpoints / 'epoch_000.ckpt'}", "logger=none"])
    assert evaluate(eval_cfg)["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-7)


def test_per_pixel_statistics_travel_in_the_checkpoint(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    import torch

    cfg = make_cfg("train", ["debug=fast", "data.normalize=per_pixel", "logger=none", "test=false"])
    train(cfg)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    state = checkpoint["MNISTDataModule"]["standardizer"]
    assert state["normalize"] == "per_pixel" and state["mean"].shape == (1, 28, 28)


@pytest.mark.parametrize(
    "override",
    ["data.on_device=true", pytest.param("model.compile=true", marks=pytest.mark.slow)],
)
def test_gpu_oriented_switches_run_on_cpu_too(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, override: str
) -> None:
    metrics = train(make_cfg("train", ["debug=fast", "logger=none", override]))
    assert 0.0 <= metrics["test/acc"] <= 1.0
    import torch

    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(not key.startswith("_compiled") and "_orig_mod" not in key for key in checkpoint["state_dict"])


@pytest.mark.slow
def test_one_real_epoch_reaches_95_percent(make_cfg: Callable[..., DictConfig]) -> None:
    # The tutorial's own setup (batch 32, per-pixel standardization) for exactly one epoch.
    cfg = make_cfg(
        "train",
        [
            "experiment=keras_tutorial",
            "trainer.max_epochs=1",
            "logger=none",
            "callbacks.rich_progress_bar=null",
        ],
    )
    metrics = train(cfg)
    assert metrics["val/acc"] >= 0.95
    assert metrics["test/acc"] >= 0.95


def _cli(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    env.pop("PROJECT_ROOT", None)
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_command_line_runs_from_another_folder_and_reports_the_run(tmp_path: Path, mnist_dir: Path) -> None:
    result = _cli(["lightning_template.train", "debug=fast", f"paths.data_dir={mnist_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "logs" / "debug" / "runs").iterdir())
    assert len(runs) == 1
    run = runs[0]
    assert (run / ".hydra" / "config.yaml").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert f"tensorboard --logdir {run}" in " ".join(result.stdout.split())


@pytest.mark.slow
def test_multirun_writes_one_directory_per_job(tmp_path: Path, mnist_dir: Path) -> None:
    result = _cli(
        [
            "lightning_template.train",
            "-m",
            "optimizer.lr=0.01,0.001",
            "debug=fast",
            f"paths.data_dir={mnist_dir}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "debug" / "multiruns").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    for job in jobs:
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        assert list((sweep / job / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["lightning_template.train", "data.val_split=1.5"], "data.val_split=1.5"),
        (["lightning_template.train", "model.net.hidden_sizes=[]"], "hidden_sizes"),
        (["lightning_template.eval"], "No checkpoint given"),
        (["lightning_template.eval", "ckpt_path=nowhere.ckpt"], "nowhere.ckpt does not exist"),
    ],
)
def test_bad_input_exits_2_with_a_short_message(tmp_path: Path, args: list[str], needle: str) -> None:
    result = _cli(args, cwd=tmp_path)
    assert result.returncode == 2
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
