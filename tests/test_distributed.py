"""DDP over CPU processes (`trainer=ddp_cpu`), started the way users start it: the command line, Lightning's
subprocess launcher, alone and inside a `-m` multirun."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from pathlib import Path

import lightning as L
import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict, read_write
from torch.utils.data import DistributedSampler

from lightning_template.distributed import job_process_command
from lightning_template.errors import UserInputError
from lightning_template.eval import evaluate
from lightning_template.runtime import load_classifier
from lightning_template.train import build_run

from tests.train_cli import last_scalar, train_cli

DDP = ["trainer=ddp_cpu", "trainer.devices=2", "callbacks.rich_progress_bar=null"]


def _event_pids(run_dir: Path) -> set[str]:
    # events.out.tfevents.<time>.<host>.<pid>.<n>: the process that wrote each file.
    return {path.name.split(".")[-2] for path in (run_dir / "tensorboard").glob("events.out.tfevents.*")}


def _dirs_named(root: Path, name: str) -> list[Path]:
    return sorted(p for p in root.rglob(name) if p.is_dir())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")  # the bare Trainer used to check
def test_two_cpu_processes_split_the_data_and_write_one_run(
    tmp_path: Path, mnist_dir: Path, make_cfg: Callable[..., DictConfig]
) -> None:
    samples = tmp_path / "samples"
    result = train_cli(
        [
            *DDP,
            f"paths.data_dir={mnist_dir}",
            "trainer.max_epochs=2",
            "data.batch_size=1000",  # per process: 28 steps per epoch on each rank
            "+callbacks.sample_recorder._target_=tests.sample_recorder.SampleRecorder",
            f"+callbacks.sample_recorder.dirpath={samples}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    # One run directory, one writer of events, one family of checkpoints.
    logs = tmp_path / "logs"
    (run,) = (logs / "train" / "runs").iterdir()
    assert _dirs_named(logs, ".hydra") == [run / ".hydra"]
    assert _dirs_named(logs, "tensorboard") == [run / "tensorboard"]
    assert len(_event_pids(run)) == 1
    checkpoints = sorted(p.name for p in logs.rglob("*.ckpt"))
    assert len(checkpoints) == 2 and checkpoints[-1] == "last.ckpt" and checkpoints[0].startswith("epoch_")
    assert (run / "train_ddp_process_1.log").is_file()  # the second process joined this run, not a new one

    # Each epoch the two ranks fetched disjoint halves that together are the whole training split, in the
    # order DistributedSampler draws for this seed and epoch.
    ranks = [json.loads((samples / f"rank{r}.json").read_text()) for r in (0, 1)]
    size = ranks[0]["train_size"]
    assert {r["sampler"] for r in ranks} == {"DistributedSampler"}
    for epoch in ("0", "1"):
        seen = [r["epochs"][epoch] for r in ranks]
        assert not set(seen[0]) & set(seen[1])
        assert sorted(seen[0] + seen[1]) == list(range(size))
        for rank, indices in enumerate(seen):
            expected = DistributedSampler(range(size), num_replicas=2, rank=rank, shuffle=True, seed=42)
            expected.set_epoch(int(epoch))
            assert indices == list(expected)
    assert ranks[0]["epochs"]["0"] != ranks[0]["epochs"]["1"]  # reshuffled every epoch

    # The logged metrics are those of the whole validation and test sets: one process on the best
    # checkpoint finds the same numbers.
    (best,) = (run / "checkpoints").glob("epoch_*.ckpt")
    eval_cfg = make_cfg("eval", [f"ckpt_path={best}", "logger=none", "trainer.accelerator=cpu"])
    assert evaluate(eval_cfg)["test/acc"] == pytest.approx(last_scalar(run, "test/acc"), abs=1e-6)
    single = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    (validated,) = single.validate(
        load_classifier(best), datamodule=instantiate(eval_cfg.data), ckpt_path=best, weights_only=True
    )
    # val/acc_best is what train() returns to sweepers (optimized_metric).
    assert validated["val/acc"] == pytest.approx(last_scalar(run, "val/acc_best"), abs=1e-6)


@pytest.mark.slow
def test_ddp_jobs_of_a_multirun_write_one_directory_each(tmp_path: Path, mnist_dir: Path) -> None:
    result = train_cli(
        ["-m", "optimizer.lr=0.01,0.001", *DDP, "debug=fast", f"paths.data_dir={mnist_dir}"], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]

    logs = tmp_path / "logs"
    (sweep,) = (logs / "debug" / "multiruns").iterdir()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert not list(logs.rglob("runs"))
    assert _dirs_named(logs, ".hydra") == [sweep / "0" / ".hydra", sweep / "1" / ".hydra"]
    writers = []
    for job in ("0", "1"):
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        assert (sweep / job / "train_ddp_process_1.log").is_file()  # each job started its own second process
        writers.append(_event_pids(sweep / job))
    assert writers[0] == writers[1] and len(writers[0]) == 1  # rank 0 of both jobs: the sweep's process


def test_extra_process_command_runs_this_job_only(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    make_cfg("train", ["optimizer.lr=0.01"])
    hydra_cfg = HydraConfig.get()
    # What a job of `-m optimizer.lr=0.01,0.1 hydra/sweeper=optuna` sees.
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.mode = "MULTIRUN"
        hydra_cfg.overrides.hydra = ["hydra.mode=MULTIRUN", "hydra/sweeper=optuna", "hydra.job.chdir=false"]
        hydra_cfg.overrides.task = ["optimizer.lr=0.01", "trainer=ddp_cpu"]
        hydra_cfg.runtime.output_dir = str(tmp_path / "multiruns" / "sweep" / "3")
    command, cwd = job_process_command(local_rank=1)

    args = command[command.index("--config-name=train") :]
    assert "-m" not in args and "--multirun" not in args
    assert not [a for a in args if a.startswith(("hydra.mode", "hydra/sweeper", "optimizer.lr=0.1"))]
    assert {"optimizer.lr=0.01", "trainer=ddp_cpu", "hydra.job.chdir=false"} <= set(args)
    assert f'hydra.run.dir="{tmp_path / "multiruns" / "sweep" / "3"}"' in args
    assert "hydra.output_subdir=null" in args
    assert Path(cwd).is_dir()


def test_extra_processes_cannot_start_from_a_pool_worker(
    make_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    make_cfg("train", ["trainer=ddp_cpu"])
    # What a job of `-m hydra/launcher=joblib` sees: the worker's __main__ is joblib's, not lightning_template.train.
    worker = types.ModuleType("__main__")
    worker.__spec__ = ModuleSpec("joblib.externals.loky.backend.popen_loky_posix", None)
    monkeypatch.setitem(sys.modules, "__main__", worker)
    with pytest.raises(UserInputError, match="hydra/launcher=joblib"):
        job_process_command(local_rank=1)


def test_ddp_cpu_builds_a_two_process_trainer(make_cfg: Callable[..., DictConfig]) -> None:
    trainer = build_run(make_cfg("train", ["trainer=ddp_cpu"])).trainer
    assert type(trainer.strategy).__name__ == "DDPStrategy"
    assert trainer.num_devices == 2 and trainer.num_nodes == 1
    assert trainer.strategy._get_process_group_backend() == "gloo"


def test_gpu_ddp_config_composes_without_a_gpu(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("train", ["trainer=ddp", "trainer.devices=8", "trainer.num_nodes=2"])
    trainer = cfg.trainer
    assert (trainer.accelerator, trainer.strategy, trainer.devices, trainer.num_nodes) == ("gpu", "ddp", 8, 2)
    assert trainer.sync_batchnorm and trainer.precision == "32-true"
    assert trainer.max_epochs == 10  # everything else comes from trainer/default.yaml
