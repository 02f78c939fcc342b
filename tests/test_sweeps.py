"""Sweeps through Hydra's plugins, started from the command line: Optuna, joblib in parallel, SLURM without a cluster."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module

from tests.train_cli import last_scalar, train_cli

QUIET = ["callbacks.rich_progress_bar=null", "callbacks.rich_model_summary=null"]


@pytest.mark.slow
def test_optuna_search_reports_the_best_trial(tmp_path: Path, mnist_dir: Path) -> None:
    result = train_cli(
        [
            "-m",
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=3",
            "debug=fast",
            "test=false",
            f"paths.data_dir={mnist_dir}",
            *QUIET,
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    (sweep,) = (tmp_path / "logs" / "debug" / "multiruns").iterdir()
    trials = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in trials] == ["0", "1", "2"]
    searched = {"optimizer.lr", "model.net.hidden_sizes", "model.net.dropout", "data.batch_size"}
    for trial in trials:
        overrides = yaml.safe_load((trial / ".hydra" / "overrides.yaml").read_text())
        assert searched <= {o.split("=", 1)[0] for o in overrides}

    # The best value is the best val/acc_best any trial logged (what train() returned to the sweeper).
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == searched
    best = max(last_scalar(trial, "val/acc_best") for trial in trials)
    assert results["best_value"] == pytest.approx(best, abs=1e-6)
    assert f"Best value: {results['best_value']}" in result.stdout + result.stderr


@pytest.mark.slow
def test_joblib_runs_the_jobs_of_a_sweep_at_the_same_time(tmp_path: Path, mnist_dir: Path) -> None:
    meeting = tmp_path / "meeting"
    result = train_cli(
        [
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "optimizer.lr=0.01,0.001",
            "debug=fast",
            "test=false",
            "logger=none",
            f"paths.data_dir={mnist_dir}",
            *QUIET,
            # Each job waits at the start of training until the other one has started too.
            "+callbacks.rendezvous._target_=tests.rendezvous.Rendezvous",
            f"+callbacks.rendezvous.dirpath={meeting}",
            "+callbacks.rendezvous.parties=2",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    records = [json.loads(p.read_text()) for p in meeting.glob("*.json")]
    assert len({r["pid"] for r in records}) == 2  # two worker processes ...
    assert max(r["arrived"] for r in records) <= min(r["met"] for r in records)  # ... training at once
    (sweep,) = (tmp_path / "logs" / "debug" / "multiruns").iterdir()
    for job in ("0", "1"):
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()


SLURM_2X8 = ["hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2", "trainer.devices=8"]


def test_slurm_launcher_follows_the_trainer(tmp_path: Path) -> None:
    with initialize_config_module("lightning_template.conf", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[*SLURM_2X8, "hydra.launcher.partition=gpu", f"paths.log_dir={tmp_path}"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 8, 8)
    assert launcher.partition == "gpu" and launcher.timeout_min == 240
    assert launcher.additional_parameters.signal == "USR1@120"  # Lightning's auto-requeue signal
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.accelerator == "gpu"

    with initialize_config_module("lightning_template.conf", version_base="1.3"):
        default = compose("train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert (default.hydra.launcher.nodes, default.hydra.launcher.gpus_per_node) == (1, 1)


def test_slurm_launcher_config_prints_without_a_cluster(tmp_path: Path) -> None:
    result = train_cli([*SLURM_2X8, "hydra.launcher.partition=gpu", "--cfg", "hydra"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    launcher = yaml.safe_load(result.stdout)["hydra"]["launcher"]
    assert launcher["partition"] == "gpu" and launcher["timeout_min"] == 240
    assert launcher["tasks_per_node"] == "${trainer.devices}"


def test_slurm_sweep_submits_one_task_per_gpu(tmp_path: Path) -> None:
    # Stand-ins: sbatch keeps the script it is given, then refuses it (no cluster, no job); srun is only looked for.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    submitted = tmp_path / "submitted.sh"
    stubs = {
        "sbatch": f'#!/bin/sh\ncp "$(eval echo \\${{$#}})" {submitted}\necho "no cluster" >&2\nexit 1\n',
        "srun": "#!/bin/sh\nexit 1\n",
    }
    for name, text in stubs.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    result = train_cli(
        ["-m", *SLURM_2X8, "hydra.launcher.partition=gpu", "optimizer.lr=0.01,0.001"],
        cwd=tmp_path,
        env={"PATH": os.pathsep.join([str(bin_dir), os.environ["PATH"]])},
    )
    assert result.returncode != 0 and "no cluster" in result.stderr

    script = submitted.read_text().splitlines()
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=240",
        "#SBATCH --signal=USR1@120",
        "#SBATCH --array=0-1%2",
    ):
        assert line in script
    assert any(line.startswith("srun ") for line in script)
