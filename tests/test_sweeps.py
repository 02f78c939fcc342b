"""The command line as users run it: sweeps that survive a failed job, DDP, Optuna, joblib and SLURM."""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from unittest import mock

import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_template.errors import UserError, report_user_errors
from lightning_template.eval import evaluate
from lightning_template.sweeps import KILLED
from lightning_template.train import main

from tests.conftest import run_cli
from tests.test_output import suspect_lines

QUICK = ["debug=fast", "callbacks.progress_bar=null"]


def sweep_jobs(log_dir: Path) -> list[Path]:
    """The job directories of the one sweep written under `log_dir`."""
    (sweep,) = (log_dir / "debug" / "multiruns").iterdir()
    return sorted(path for path in sweep.iterdir() if path.is_dir())


def run_sweep(args: Sequence[str]) -> int:
    """`python -m lightning_template.train -m <args>`, in this process: no interpreter to start. Its exit code."""
    hydra_config = HydraConfig.instance().cfg  # put back afterwards: the sweep would leave its own
    # Without Hydra's logging setup, which would write the later tests' log records into this sweep's files.
    argv = ["lightning_template.train", "-m", *args, "hydra/job_logging=none", "hydra/hydra_logging=none"]
    try:
        with mock.patch.object(sys, "argv", argv):
            main()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        HydraConfig.instance().cfg = hydra_config
    return 0


def summary(log_dir: Path) -> list[dict[str, str]]:
    """The rows of the sweep's summary.csv."""
    (sweep,) = (log_dir / "debug" / "multiruns").iterdir()
    return list(csv.DictReader((sweep / "summary.csv").read_text().splitlines()))


@pytest.mark.slow
def test_a_failed_job_is_reported_and_the_sweep_goes_on(tmp_path: Path, mnist_dir: Path) -> None:
    paths = [f"paths.log_dir={tmp_path}", f"paths.data_dir={mnist_dir}"]
    result = run_cli(
        "lightning_template.train", ["-m", *QUICK, *paths, "model.net.dropout=1.5,0.1"], cwd=tmp_path
    )
    assert result.returncode == 1
    assert "1 job(s) of this sweep failed" in result.stderr
    assert "Traceback" not in result.stderr
    assert suspect_lines(result) == []  # nothing but the failed job's message to read
    failed, ok = sweep_jobs(tmp_path)
    assert "model.net.dropout must be in [0, 1)" in (failed / "error.txt").read_text()
    assert (ok / "checkpoints" / "last.ckpt").is_file() and not (ok / "error.txt").exists()
    rows = summary(tmp_path)
    assert [row["job"] for row in rows] == ["1", "0", "mean", "std"]  # finished jobs first, failed ones after
    assert rows[0]["status"] == "ok" and float(rows[0]["val/acc_best"]) > 0
    assert (
        rows[1]["status"].startswith("failed: model.net.dropout must be in [0, 1)")
        and rows[1]["val/acc_best"] == ""
    )
    assert rows[2]["val/acc_best"] == rows[0]["val/acc_best"] and float(rows[3]["val/acc_best"]) == 0.0


def test_a_user_error_outside_a_sweep_is_one_paragraph_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped, report_user_errors():
        raise UserError("data.batch_size must be a positive integer, got 0.")
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "Error: data.batch_size must be a positive integer, got 0.\n"
    with pytest.raises(ZeroDivisionError), report_user_errors():  # anything else keeps its traceback
        print(1 / 0)


@pytest.mark.slow
def test_ddp_jobs_of_a_sweep_write_one_directory_each_and_test_the_whole_set_once(
    tmp_path: Path, mnist_dir: Path, make_cfg
) -> None:
    args = [*QUICK, "trainer=ddp_cpu", "++trainer.limit_test_batches=1.0", "optimizer.lr=0.01,0.002"]
    result = run_cli(
        "lightning_template.train",
        ["-m", *args, f"paths.log_dir={tmp_path}", f"paths.data_dir={mnist_dir}"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "debug" / "runs").exists()  # the extra processes joined their jobs
    for job in sweep_jobs(tmp_path):
        assert {path.name for path in job.iterdir()} >= {".hydra", "tensorboard", "checkpoints", "curves.png"}
        assert sorted(p.name for p in (job / "checkpoints").iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    events = EventAccumulator(str(job / "tensorboard"))
    events.Reload()
    ddp_test_acc = events.Scalars("test/acc")[-1].value
    single = evaluate(make_cfg("eval", [f"ckpt_path={job}/checkpoints/epoch_000.ckpt", "logger=none"]))
    assert single["test/acc"] == pytest.approx(ddp_test_acc, abs=1e-6)


@pytest.mark.slow
def test_an_optuna_search_with_a_diverging_range_runs_every_trial(
    tmp_path: Path, mnist_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    lr_range = "optimizer.lr=tag(log, interval(1e-3, 1e7))"  # seed 42 draws 5.6, 0.0016, 1314, 1190
    args = [*QUICK, "hparams_search=optuna", "optimizer=sgd", lr_range, "hydra.sweeper.n_trials=4"]
    assert run_sweep([*args, f"paths.log_dir={tmp_path}", f"paths.data_dir={mnist_dir}"]) == 1
    assert "job(s) of this sweep failed" in capsys.readouterr().err
    rows = summary(tmp_path)
    assert len(sweep_jobs(tmp_path)) == 4 and [row["job"] for row in rows[4:]] == ["mean", "std"]
    lrs = {float(row["overrides"].split("optimizer.lr=")[1].split()[0]): row["status"] for row in rows[:4]}
    assert min(lrs) < 0.01 and max(lrs) > 100
    assert all(status == "ok" for lr, status in lrs.items() if lr < 0.01)
    assert all(status.startswith("failed: Training diverged") for lr, status in lrs.items() if lr > 100)
    best = yaml.safe_load((sweep_jobs(tmp_path)[0].parent / "optimization_results.yaml").read_text())
    assert rows[0]["status"] == "ok"
    assert float(rows[0]["val/acc_best"]) == pytest.approx(best["best_value"], abs=1e-6)  # best first


# train() in place of the real one, for sweeps that stop: by `+outcome`, a job finishes, fails with a user
# error, is interrupted (interrupted.txt, then exit 143: train.py on SIGTERM) or is SIGKILLed. Joblib's
# workers run it too: Hydra's task function reaches them by value.
FAKE_TRAIN = """
import json, os, signal, sys
from pathlib import Path
from unittest import mock

from lightning_template import train
from lightning_template.errors import UserError


def fake_train(cfg):
    job = Path(cfg.paths.output_dir)
    if cfg.outcome == "fail":
        raise UserError("Training diverged.")
    if cfg.outcome == "interrupt":
        (job / "interrupted.txt").write_text("Interrupted by SIGTERM.")
        sys.exit(143)
    if cfg.outcome == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    (job / "metrics.json").write_text(json.dumps({"val/acc_best": 0.5}))
    return {"val/acc_best": 0.5}


with mock.patch.object(train, "train", fake_train):
    train.main()
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "code", "statuses", "message"),
    [  # statuses: the jobs' rows in summary.csv (None: no row, the job never started)
        (
            ["+outcome=ok,fail,interrupt,ok"],
            143,
            {"0": "ok", "1": "failed: Training diverged.", "2": "interrupted", "3": None},
            "The sweep stopped early: job(s) 2 did not finish; Hydra cannot resume it.",
        ),
        (
            ["+outcome=kill", "hydra/launcher=joblib"],
            1,
            {"0": KILLED},
            "The sweep stopped early: job(s) 0 did not finish",
        ),
        (
            ["hparams_search=optuna", "+outcome=fail", "hydra.sweeper.n_trials=3"],
            1,
            dict.fromkeys("012", "failed: Training diverged."),
            "3 job(s) of this sweep failed",
        ),
        (
            ["hparams_search=optuna", "+outcome=interrupt", "hydra.sweeper.storage=sqlite:///optuna.db"],
            143,
            {"0": "interrupted", "1": None},
            "The same command goes on with the study in sqlite:///optuna.db: 20 trials.",
        ),
    ],
    ids=["interrupted", "joblib-worker-killed", "optuna-all-failed", "optuna-interrupted"],
)
def test_a_sweep_that_stops_still_writes_its_summary(
    tmp_path: Path, args: list[str], code: int, statuses: dict[str, str | None], message: str
) -> None:
    """Hydra calls no callback then: an interrupted job's exit, a dead joblib worker, Optuna's error when no
    trial completed (hydra-optuna-sweeper asks the study for its best trial)."""
    if "hparams_search=optuna" in args:
        pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    if "hydra/launcher=joblib" in args:
        pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    (tmp_path / "fake_train.py").write_text(FAKE_TRAIN)
    result = run_cli("fake_train", ["-m", *args, "task_name=debug", f"paths.log_dir={tmp_path}"], tmp_path)
    assert result.returncode == code, result.stderr[-3000:]
    assert message in result.stderr
    assert "ckpt_path=" not in result.stdout + result.stderr  # no single run to resume
    rows = {row["job"]: row["status"] for row in summary(tmp_path)}
    assert {job: rows.get(job) for job in statuses} == statuses


def test_the_joblib_launcher_composes() -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    with initialize_config_module("lightning_template.conf", version_base="1.3"):
        cfg = compose("train", ["hydra/launcher=joblib"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")


def test_the_slurm_launcher_asks_for_what_the_trainer_uses() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with initialize_config_module("lightning_template.conf", version_base="1.3"):
        cfg = compose(
            "train",
            ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (2, 4, 4)
    assert (launcher.cpus_per_task, launcher.mem_gb) == (8, 64)
    assert launcher.additional_parameters.signal == "USR1@120"  # Lightning saves and requeues on it
    with initialize_config_module("lightning_template.conf", version_base="1.3"):
        cfg = compose("train", ["hydra/launcher=slurm", "trainer=ddp_cpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher  # a CPU partition: no GPU asked for
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.cpus_per_task, launcher.mem_gb) == (
        None,
        2,
        1,
        4,
    )


@pytest.mark.slow
def test_a_five_fold_sweep_summarizes_its_folds(tmp_path: Path, mnist_dir: Path) -> None:
    folds = [
        "data.folds=5",
        "data.fold=0,1,2,3,4",
        "seed=null",  # one seed drawn for the sweep: every fold partitions the data the same way
        "logger=csv",
        "callbacks.prediction_images=null",
        "test=false",
    ]
    assert run_sweep([*QUICK, *folds, f"paths.log_dir={tmp_path}", f"paths.data_dir={mnist_dir}"]) == 0
    rows = summary(tmp_path)
    assert [row["status"] for row in rows[:5]] == ["ok"] * 5 and [row["job"] for row in rows[5:]] == [
        "mean",
        "std",
    ]
    seeds = {
        yaml.safe_load(Path(row["run_dir"], "csv", "hparams.yaml").read_text())["seed"] for row in rows[:5]
    }
    assert len(seeds) == 1 and isinstance(seeds.pop(), int)
    accuracies = [float(row["val/acc"]) for row in rows[:5]]
    assert float(rows[5]["val/acc"]) == pytest.approx(sum(accuracies) / 5)
    assert float(rows[6]["val/acc"]) > 0  # the folds differ
