"""Training end to end: what a run writes, eval reproducing it, resuming, interruptions, bad input."""

from __future__ import annotations

import errno
import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_template import errors
from lightning_template.checkpoints import AtomicCheckpointIO, find_checkpoint
from lightning_template.errors import UserError, user_error_in
from lightning_template.eval import evaluate
from lightning_template.train import train

from tests.conftest import FAST, run_cli


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.slow
def test_one_real_epoch_reaches_95_percent(make_cfg: Callable[..., DictConfig]) -> None:
    # The Keras tutorial's setup (batch 32, per-pixel standardization) for exactly one epoch.
    cfg = make_cfg(
        "train", ["experiment=keras_tutorial", "trainer.max_epochs=1", "logger=none", "callbacks=none"]
    )
    assert train(cfg)["test/acc"] >= 0.95


def test_a_run_writes_checkpoints_and_tensorboard_and_eval_reproduces_it(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    metrics = train(make_cfg("train", FAST))
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/acc", "test/loss"} <= set(
        metrics
    )
    assert {p.name for p in (tmp_path / "checkpoints").iterdir()} == {"epoch_000.ckpt", "last.ckpt"}

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"train/loss", "val/acc", "val/acc_best", "hp_metric", "test/acc"} <= set(events.Tags()["scalars"])
    assert events.Scalars("test/acc")[-1].value == pytest.approx(metrics["test/acc"])
    hparams = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hparams)
    assert b"val/acc_best" in hparams["_hparams_/experiment"]  # a metric to compare runs by

    # The checkpoint alone (network, standardization, data config) gives the same test accuracy.
    best = tmp_path / "checkpoints" / "epoch_000.ckpt"
    evaluated = evaluate(
        make_cfg("eval", [f"ckpt_path={best}", "logger=none", "++trainer.limit_test_batches=2"])
    )
    assert evaluated["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-7)


def test_one_seed_gives_one_result(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        train(make_cfg("train", [*FAST, "logger=none", f"paths.output_dir={tmp_path / name}"]))
        runs.append(weights(tmp_path / name / "checkpoints" / "last.ckpt"))
    assert all(torch.equal(runs[0][key], runs[1][key]) for key in runs[0])


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    two_epochs = [*FAST, "trainer.max_epochs=2", "logger=none", "model.net.dropout=0.3"]
    uninterrupted = train(make_cfg("train", [*two_epochs, f"paths.output_dir={tmp_path / 'straight'}"]))
    # The same run, stopped after its first epoch (as a preempted job would be), then resumed.
    train(
        make_cfg("train", [*two_epochs, "+trainer.max_steps=5", f"paths.output_dir={tmp_path / 'resumed'}"])
    )
    last = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    resumed = train(
        make_cfg("train", [*two_epochs, f"paths.output_dir={tmp_path / 'resumed'}", f"ckpt_path={last}"])
    )
    straight = weights(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    again = weights(last)
    assert all(torch.equal(straight[key], again[key]) for key in straight)
    assert resumed["val/acc_best"] == uninterrupted["val/acc_best"]  # the best survives the resume
    assert len(list(last.parent.glob("epoch_*.ckpt"))) == 1  # one best checkpoint, and last.ckpt


class Interrupt(L.Callback):
    """Stops the run in one phase the way a user (Ctrl-C) or a scheduler (SIGTERM) does."""

    def __init__(self, how: str, phase: str) -> None:
        self.how, self.phase = how, phase

    def stop(self, phase: str) -> None:
        if phase == self.phase:
            if self.how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                raise KeyboardInterrupt

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.stop("training" if trainer.global_step == 3 else "")

    def on_validation_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.stop("sanity check" if trainer.sanity_checking else "validation")

    def on_test_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.stop("test")


@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
@pytest.mark.parametrize(("how", "code"), [("sigterm", 143), ("ctrl-c", 130)])
def test_an_interrupted_run_saves_a_checkpoint_that_resumes_it(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, how: str, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    interrupt = [
        "+callbacks.interrupt._target_=tests.test_train.Interrupt",
        f"+callbacks.interrupt.how={how}",
    ]
    cfg = make_cfg("train", [*FAST, "logger=none", *interrupt, "+callbacks.interrupt.phase=training"])
    with pytest.raises(SystemExit) as stopped:
        train(cfg)
    assert stopped.value.code == code
    saved = tmp_path / "checkpoints" / "last.ckpt"
    resume = caplog.text.split("Resume from last.ckpt with ", 1)[1].split()
    assert (
        resume[:3] == [sys.executable, "-m", "lightning_template.train"]
        and resume[-1] == f"ckpt_path={saved}"
    )
    assert torch.load(saved, weights_only=True)["global_step"] in (3, 4)  # SIGTERM finishes its step
    cfg.callbacks.interrupt = None
    cfg.ckpt_path = str(saved)
    train(cfg)
    assert sorted(p.name for p in saved.parent.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]


@pytest.mark.parametrize(
    ("how", "phase", "code", "says"),
    [
        ("ctrl-c", "sanity check", 130, "while fitting. No checkpoint of this run was saved yet"),
        ("sigterm", "validation", 143, "while fitting. No checkpoint of this run was saved yet"),
        ("sigterm", "test", 143, "while testing. Training had finished; test with "),
    ],
)
def test_an_interruption_in_any_phase_exits_nonzero_and_says_what_is_left(
    make_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    how: str,
    phase: str,
    code: int,
    says: str,
) -> None:
    interrupt = [
        f"+callbacks.interrupt={{_target_: tests.test_train.Interrupt, how: {how}, phase: '{phase}'}}"
    ]
    cfg = make_cfg("train", [*FAST, "logger=none", "trainer.num_sanity_val_steps=2", *interrupt])
    with pytest.raises(SystemExit) as stopped:
        train(cfg)
    assert stopped.value.code == code
    assert f"Interrupted by {'SIGTERM' if how == 'sigterm' else 'Ctrl-C'} {says}" in caplog.text
    if phase == "test":  # the command to finish the job: test the best checkpoint
        assert f"lightning_template.eval ckpt_path={tmp_path}/checkpoints/epoch_000.ckpt" in caplog.text
    else:
        assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_a_run_resumed_for_more_epochs_anneals_from_its_current_rate_and_ends_at_its_last_epoch(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    train(make_cfg("train", [*FAST, "trainer.max_epochs=4", "+trainer.max_steps=10"]))  # 2 of 4 epochs
    last = tmp_path / "checkpoints" / "last.ckpt"
    resume = [*FAST, "trainer.max_epochs=8", f"ckpt_path={last}"]
    train(make_cfg("train", resume))
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    rates = [event.value for event in events.Scalars("lr-Adam")]  # one per epoch, the resumed ones too
    assert rates[:2] == pytest.approx([1e-3, 1e-3 * (1 + math.cos(math.pi / 4)) / 2])
    # Cosine from the rate epoch 2 had in the 4-epoch plan (5e-4) to 0 after epoch 7, never climbing back.
    assert rates[2:] == pytest.approx([5e-4 * (1 + math.cos(math.pi * k / 6)) / 2 for k in range(6)])
    assert torch.load(last, weights_only=True)["epoch"] == 7  # last.ckpt: the last epoch, not the best
    before = weights(last)
    train(make_cfg("train", resume))  # a finished run resumed trains nothing more
    assert all(torch.equal(before[key], value) for key, value in weights(last).items())


def test_a_schedule_that_cannot_be_stretched_is_refused_before_anything_is_written(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    train(make_cfg("train", [*FAST, "scheduler=onecycle"]))
    files = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    last = tmp_path / "checkpoints" / "last.ckpt"
    cfg = make_cfg("train", [*FAST, "scheduler=onecycle", "trainer.max_epochs=2", f"ckpt_path={last}"])
    with pytest.raises(
        UserError, match=r"1-epoch OneCycleLR schedule, which cannot be stretched.*trainer\.max_epochs=1"
    ):
        train(cfg)
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == files


def test_one_cycle_peaks_at_the_optimizers_rate(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("train", ["scheduler=onecycle", "optimizer.lr=0.02"])
    optimizer = torch.optim.SGD([torch.zeros(1)])
    scheduler = instantiate(cfg.scheduler.scheduler)(optimizer, total_steps=10)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert max(rates) == pytest.approx(0.02)


@pytest.mark.slow
def test_a_failed_command_changes_nothing_in_the_run_it_names_and_logs_its_error(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, mnist_dir: Path
) -> None:
    run = tmp_path / "logs" / "train" / "runs" / "first"
    train(make_cfg("train", [*FAST, f"paths.output_dir={run}"]))
    files = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    paths = [f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={mnist_dir}", "print_config=false"]
    for bad in ("model=cnn", "optimizer.lr=-1"):
        result = run_cli(
            "lightning_template.train", [f"ckpt_path={run}/checkpoints/last.ckpt", bad, *paths], tmp_path
        )
        assert result.returncode == 2 and "\nError: " in result.stderr, result.stderr
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == files
    logs = [path.read_text() for path in (run.parent).glob("*/train.log")]  # each command's own log
    assert len(logs) == 2 and all("[ERROR]" in log for log in logs)


def test_seed_null_draws_a_seed_that_is_logged_and_repeats_the_run(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = make_cfg("train", [*FAST, "seed=null", "logger=csv", f"paths.output_dir={tmp_path / 'a'}"])
    train(cfg)
    assert isinstance(cfg.seed, int)
    assert yaml.safe_load((tmp_path / "a" / "csv" / "hparams.yaml").read_text())["seed"] == cfg.seed
    train(make_cfg("train", [*FAST, f"seed={cfg.seed}", "logger=none", f"paths.output_dir={tmp_path / 'b'}"]))
    first, again = (weights(tmp_path / name / "checkpoints" / "last.ckpt") for name in "ab")
    assert all(torch.equal(first[key], again[key]) for key in first)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    resumed = make_cfg(
        "train", [*FAST, "seed=null", "logger=none", "trainer.max_epochs=2", f"ckpt_path={last}"]
    )
    train(resumed)
    assert resumed.seed == cfg.seed  # a resumed seed=null run keeps its seed, so its validation split


def test_a_checkpoint_write_that_fails_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, path)

    def full_disk(checkpoint: Any, file: Any) -> None:
        file.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_ckpt_path_last_is_the_newest_last_checkpoint_of_the_task(tmp_path: Path) -> None:
    older = tmp_path / "runs" / "2026-01-01" / "checkpoints" / "last.ckpt"
    newer = tmp_path / "multiruns" / "2026-01-02" / "3" / "checkpoints" / "last.ckpt"
    for age, path in enumerate((older, newer)):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
        os.utime(path, (1000 + age, 1000 + age))
    assert find_checkpoint("last", str(tmp_path)) == newer


def test_a_diverging_run_stops_with_a_message(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("train", [*FAST, "logger=none", "optimizer=sgd", "optimizer.lr=1e12"])
    with pytest.raises(UserError, match=r"Training diverged.*optimizer\.lr"):
        train(cfg)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.val_split=1.5", "data.val_split"),
        ("data.batch_size=0", "data.batch_size"),
        ("model.net.hidden_sizes=[]", "model.net.hidden_sizes"),
        ("model.net.dropout=1.5", "model.net.dropout"),
        ("optimizer.lr=-1", "optimizer.lr"),
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("ckpt_path=nowhere.ckpt", "ckpt_path"),
        ("ckpt_path=last", "ckpt_path=last"),
    ],
)
def test_bad_values_name_the_key(make_cfg: Callable[..., DictConfig], override: str, key: str) -> None:
    with pytest.raises(Exception) as error:  # noqa: PT011 (Hydra may wrap it: user_error_in unwraps)
        train(make_cfg("train", [*FAST, "logger=none", override]))
    user_error = user_error_in(error.value)
    assert user_error is not None and key in str(user_error)


def test_resuming_into_another_network_names_the_difference(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    train(make_cfg("train", [*FAST, "logger=none"]))
    cfg = make_cfg(
        "train",
        [*FAST, "logger=none", "model.net.hidden_sizes=[16]", f"ckpt_path={tmp_path}/checkpoints/last.ckpt"],
    )
    with pytest.raises(UserError, match="another network"):
        train(cfg)


def test_model_cnn_trains_and_its_checkpoint_evaluates(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    metrics = train(make_cfg("train", [*FAST, "model=cnn", "logger=none"]))
    best = tmp_path / "checkpoints" / "epoch_000.ckpt"
    same_test_set = ["++trainer.limit_test_batches=2", "logger=none"]
    assert evaluate(make_cfg("eval", [f"ckpt_path={best}", *same_test_set]))["test/acc"] == pytest.approx(
        metrics["test/acc"], abs=1e-7
    )


def test_this_machines_settings_come_from_an_optional_git_ignored_file(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(Path(__file__).resolve().parents[1] / "conf", conf)
    with initialize_config_dir(str(conf), version_base="1.3"):
        assert compose("train").paths.log_dir.endswith("/logs")  # no local file: the defaults
    (conf / "local" / "default.yaml").write_text(
        "paths:\n  log_dir: /scratch/runs\n"
    )  # no package line needed
    with initialize_config_dir(str(conf), version_base="1.3"):
        assert compose("train").paths.log_dir == "/scratch/runs"
        assert compose("train", ["paths.log_dir=here"]).paths.log_dir == "here"  # the command line still wins
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "conf/local/default.yaml"], cwd=Path(__file__).parents[1]
    )
    assert ignored.returncode == 0


def test_a_key_that_only_this_machines_settings_have_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "local" / "default.yaml"
    local.parent.mkdir()
    local.write_text("paths:\n  log_dirr: /scratch/runs\n")  # misspelt: it would change nothing
    monkeypatch.setattr(errors, "files", lambda package: tmp_path)  # in place of the package's conf/
    with initialize_config_module("lightning_template.conf", version_base="1.3"):
        HydraConfig().set_config(compose("train", return_hydra_config=True))
        with pytest.raises(
            UserError, match=r"conf/local/default\.yaml sets paths\.log_dirr, which no config has"
        ):
            errors.check_local_settings()
        local.write_text("paths:\n  log_dir: /scratch/runs\ntrainer:\n  accelerator: cpu\n")
        errors.check_local_settings()  # keys that exist pass
