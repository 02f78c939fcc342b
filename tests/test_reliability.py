"""Interruptions, resumption, reproducibility and bad input: nothing is lost and every error says why."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import DictConfig

from lightning_template.checkpointing import AtomicCheckpointIO, find_last_checkpoint
from lightning_template.runtime import exit_on_user_error
from lightning_template.train import build_run, train

# Small but real: two epochs of six batches, dropout and augmentation on so the random generators matter.
SMALL_RUN = [
    "trainer.max_epochs=2",
    "++trainer.limit_train_batches=6",
    "++trainer.limit_val_batches=1",
    "++trainer.limit_test_batches=1",
    "trainer.deterministic=true",
    "model.net.dropout=0.2",
    "data.augment.rotate_degrees=10",
    "logger=none",
    "callbacks.rich_progress_bar=null",
    "callbacks.rich_model_summary=null",
    "test=false",
]


class SignalAtStep(L.Callback):
    """Sends this process a signal after a chosen training step, as a scheduler's preemption would."""

    def __init__(self, step: int, signum: int = signal.SIGTERM) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, weights_only=True)["state_dict"]


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    straight = make_cfg("train", [*SMALL_RUN, f"paths.output_dir={tmp_path}/straight"])
    expected = train(straight)

    interrupted_dir = tmp_path / "interrupted"
    interrupted = make_cfg("train", [*SMALL_RUN, f"paths.output_dir={interrupted_dir}"])
    with pytest.raises(SystemExit) as stopped:
        train(interrupted, [SignalAtStep(step=8)])  # mid-way through the second epoch
    assert stopped.value.code == 128 + signal.SIGTERM
    saved = torch.load(interrupted_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (1, 8)

    resumed = make_cfg(
        "train",
        [
            *SMALL_RUN,
            f"paths.output_dir={interrupted_dir}",
            f"ckpt_path={interrupted_dir}/checkpoints/last.ckpt",
        ],
    )
    metrics = train(resumed)

    final, reference = (
        _weights(interrupted_dir / "checkpoints" / "last.ckpt"),
        _weights(tmp_path / "straight" / "checkpoints" / "last.ckpt"),
    )
    assert final.keys() == reference.keys()
    for name in reference:
        assert torch.equal(final[name], reference[name]), name
    for name in ("train/loss", "train/acc", "val/acc", "val/loss", "val/acc_best"):
        assert metrics[name] == expected[name], name


def test_two_runs_with_one_seed_are_identical_and_seeds_differ(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    first = train(make_cfg("train", [*SMALL_RUN, f"paths.output_dir={tmp_path}/a"]))
    second = train(make_cfg("train", [*SMALL_RUN, f"paths.output_dir={tmp_path}/b"]))
    timings = {name for name in first if name.startswith("time/")}  # wall clock, never reproducible
    assert timings and first.keys() == second.keys()
    assert {k: v for k, v in first.items() if k not in timings} == {
        k: v for k, v in second.items() if k not in timings
    }
    a, b = _weights(tmp_path / "a/checkpoints/last.ckpt"), _weights(tmp_path / "b/checkpoints/last.ckpt")
    assert all(torch.equal(a[name], b[name]) for name in a)

    def first_batch_labels(seed: int) -> torch.Tensor:
        run = build_run(make_cfg("train", [*SMALL_RUN, f"seed={seed}"]))
        run.datamodule.prepare_data()
        run.datamodule.setup("fit")
        return next(iter(run.datamodule.train_dataloader()))[1]

    assert not torch.equal(first_batch_labels(1), first_batch_labels(2))


def test_a_crash_while_saving_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, target)

    def dies_half_way(obj: object, file: object) -> None:
        file.write(b"PK\x03\x04 half a checkpoint")  # type: ignore[attr-defined]
        raise KeyboardInterrupt  # the process is killed in the middle of the write

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, target)
    monkeypatch.undo()

    survivor = torch.load(target, weights_only=True)
    assert survivor["epoch"] == 1 and torch.equal(survivor["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_last_finds_the_newest_checkpoint_of_the_task(tmp_path: Path) -> None:
    older = tmp_path / "train/runs/2026-01-01_00-00-00_000000/checkpoints/last.ckpt"
    newer = tmp_path / "train/multiruns/2026-01-02_00-00-00_000000/3/checkpoints/last.ckpt"
    other_task = tmp_path / "debug/runs/2026-01-03_00-00-00_000000/checkpoints/last.ckpt"
    for age, path in enumerate((older, newer, other_task)):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
        os.utime(path, (1_000_000 + age, 1_000_000 + age))
    assert find_last_checkpoint(tmp_path, "train") == newer
    assert find_last_checkpoint(tmp_path, "eval") is None


class PoisonWeightsAtStep(L.Callback):
    """Makes the loss non-finite at a chosen step, as a diverging optimizer would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


def test_a_diverging_run_stops_at_the_first_bad_step_and_keeps_the_good_checkpoint(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = make_cfg("train", SMALL_RUN)
    with pytest.raises(SystemExit) as stopped, exit_on_user_error():
        train(cfg, [PoisonWeightsAtStep(step=8)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "loss became nan at step 8 (epoch 1)" in err and "Traceback" not in err
    good = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert good["global_step"] == 6
    assert all(torch.isfinite(value).all() for value in good["state_dict"].values())


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("data.val_split=0", "data.val_split=0"),
        ("data.val_split=60000", "data.val_split=60000"),
        ("data.val_split=1.0", "data.val_split=1.0"),
        ("data.batch_size=0", "data.batch_size must be a positive integer, got 0"),
        ("model.net.hidden_sizes=[]", "hidden_sizes must be a non-empty list"),
        ("model.net.hidden_sizes=[64,-1]", "hidden_sizes must be a non-empty list"),
        ("model.net.dropout=1.0", "dropout must be in [0, 1), got 1.0"),
        ("optimizer.lr=0", "optimizer.lr must be a positive number, got 0"),
        ("optimizer.lr=-0.001", "optimizer.lr must be a positive number, got -0.001"),
        ("optimizer.weight_decay=-1", "Invalid weight_decay value: -1"),
        ("trainer.max_epochs=0", "trainer.max_epochs must be a whole number >= 1"),
        ("ckpt_path=last", "ckpt_path=last: no earlier run of task 'train'"),
        ("ckpt_path=missing.ckpt", "ckpt_path=missing.ckpt does not exist"),
    ],
)
def test_bad_values_fail_before_any_work_with_one_paragraph(
    make_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    override: str,
    needle: str,
) -> None:
    cfg = make_cfg("train", [*SMALL_RUN, override])
    with pytest.raises(SystemExit) as stopped, exit_on_user_error():
        train(cfg)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert needle in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2
    assert not (tmp_path / "checkpoints").exists()


def test_resuming_into_another_network_names_the_difference(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train(make_cfg("train", [*SMALL_RUN, "trainer.max_epochs=1", f"paths.output_dir={tmp_path}/first"]))
    last = tmp_path / "first/checkpoints/last.ckpt"
    before = last.read_bytes()
    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("not a checkpoint")
    for override, needle in (
        (f"ckpt_path={last}", "hidden_sizes: [64, 32] in the checkpoint, [128] in the config"),
        (f"ckpt_path={not_a_checkpoint}", "is not a checkpoint: it is not a file written by torch.save"),
    ):
        cfg = make_cfg("train", [*SMALL_RUN, "model.net.hidden_sizes=[128]", override])
        with pytest.raises(SystemExit), exit_on_user_error():
            train(cfg)
        assert needle in capsys.readouterr().err
    assert last.read_bytes() == before


def _cli(args: list[str], cwd: Path, **kwargs: object) -> subprocess.Popen[str]:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    env.pop("PROJECT_ROOT", None)
    return subprocess.Popen(
        [sys.executable, "-m", "lightning_template.train", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_that_ckpt_path_last_resumes(tmp_path: Path, mnist_dir: Path) -> None:
    common = [
        f"paths.data_dir={mnist_dir}",
        "++trainer.limit_train_batches=20",
        "++trainer.limit_val_batches=1",
        "callbacks.rich_progress_bar=null",
        "test=false",
    ]
    process = _cli([*common, "trainer.max_epochs=1000"], cwd=tmp_path)
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob("logs/train/runs/*/checkpoints/last.ckpt")) and time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"training ended early: {process.communicate()[1][-2000:]}")
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Interrupted by SIGTERM" in out + err and "ckpt_path=last" in out + err
    (run,) = (tmp_path / "logs/train/runs").iterdir()
    saved = torch.load(run / "checkpoints/last.ckpt", weights_only=True)

    target_epochs = saved["epoch"] + 2
    resumed = _cli([*common, "ckpt_path=last", f"trainer.max_epochs={target_epochs}"], cwd=tmp_path)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    assert [p.name for p in (tmp_path / "logs/train/runs").iterdir()] == [run.name]  # same run directory
    final = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert final["epoch"] == target_epochs - 1
    assert final["global_step"] == 20 * target_epochs
    assert (
        len(list((run / "tensorboard").glob("events.out.tfevents.*"))) >= 2
    )  # one TensorBoard run, continued
    assert len(list((run / ".hydra").glob("resumed_*/config.yaml"))) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "needle", "code"),
    [
        (["no_such_key=1"], "Key 'no_such_key' is not in struct", 1),
        (["optimizer=adamx"], "Could not find 'optimizer/adamx'", 1),
        (["paths.log_dir=__FILE__/logs"], "cannot write the run directory", 2),
        (["optimizer=sgd", "optimizer.lr=1e6", "debug=fast", "logger=none"], "Training diverged", 2),
    ],
)
def test_command_line_errors_are_short(
    tmp_path: Path, mnist_dir: Path, args: list[str], needle: str, code: int
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    args = [arg.replace("__FILE__", str(blocker)) for arg in args]
    process = _cli([*args, f"paths.data_dir={mnist_dir}"], cwd=tmp_path)
    _, err = process.communicate(timeout=300)
    assert process.returncode == code, err[-2000:]
    assert needle in err and "Traceback" not in err


def test_resumable_sampler_keeps_the_usual_shuffle_and_restarts_mid_epoch() -> None:
    from torch.utils.data import DataLoader

    from lightning_template.data.batches import ResumableRandomSampler, TensorBatchDataset, keep_batch

    data = TensorBatchDataset(torch.zeros(50, 1), torch.arange(50))

    def loader(seed: int, resumable: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(seed)
        if not resumable:
            return DataLoader(data, batch_size=8, shuffle=True, generator=generator, collate_fn=keep_batch)
        sampler = ResumableRandomSampler(data, generator)
        return DataLoader(data, batch_size=8, sampler=sampler, generator=generator, collate_fn=keep_batch)

    def labels(batches: object) -> list[list[int]]:
        return [batch[1].tolist() for batch in batches]  # type: ignore[attr-defined]

    usual, ours = loader(3, resumable=False), loader(3, resumable=True)
    for _ in range(2):  # a fresh run's order is exactly what shuffle=True gives
        assert labels(usual) == labels(ours)

    started = iter(ours)
    done = [next(started), next(started)]
    sampler = ours.sampler
    assert isinstance(sampler, ResumableRandomSampler)
    mid_epoch = sampler.position(samples_done=16, epoch_finished=False)
    rest_of_epoch = labels(started)
    after = labels(ours)
    end_of_epoch = sampler.position(samples_done=0, epoch_finished=True)

    resumed = loader(99, resumable=True)  # another seed: the position alone decides the order
    resumed.sampler.restart_from(mid_epoch)  # type: ignore[attr-defined]
    assert labels(resumed) == rest_of_epoch and len(labels(done)) + len(rest_of_epoch) == 7
    assert labels(resumed) == after
    resumed_at_end = loader(99, resumable=True)
    resumed_at_end.sampler.restart_from(end_of_epoch)  # type: ignore[attr-defined]
    assert labels(resumed_at_end) == labels(ours)


def test_ctrl_c_saves_a_resumable_checkpoint(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as stopped:
            train(make_cfg("train", SMALL_RUN), [SignalAtStep(step=3, signum=signal.SIGINT)])
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C while it shuts down
    assert stopped.value.code == 1
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (0, 3)
    assert saved["MNISTDataModule"]["train_position"]["samples_done"] == 3 * 128
