"""Hydra + DDP: the extra processes Lightning starts run the same Hydra job as the first, never a new one.

Lightning's subprocess launcher (`strategy=ddp`, or `auto` with several devices) starts each extra
process by running the command line again with `hydra.run.dir` pinned. That is right for a single run,
but inside a `-m` multirun the command line holds `-m` and every sweep value, so each extra process
started a sweep of its own, in a second timestamped folder, and the next job of the sweep found the
previous job's process group and environment still in place. `ddp_processes_join_this_job` closes
that gap; Lightning still launches, watches and stops the processes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from hydra.conf import HydraConf
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_original_cwd
from lightning.pytorch.strategies.launchers import subprocess_script

from lightning_template.errors import UserInputError

# Set by Lightning's launcher in the first process; left behind, they make the next job of a sweep
# believe its processes were started by someone else, and wait for them forever.
DDP_ENVIRONMENT = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# Hydra overrides that start or describe a sweep: an extra process runs its one job and nothing else.
SWEEP_OVERRIDES = (
    "hydra.mode",
    "hydra.sweep",
    "hydra.sweeper",
    "hydra/sweeper",
    "hydra.launcher",
    "hydra/launcher",
    "hydra.run.dir",
    "hydra.output_subdir",
    "hydra.job.name",
)
# Process pools whose workers run Hydra jobs (hydra/launcher=joblib): their `__main__` is the pool's own.
POOL_WORKERS = ("joblib", "loky")


def _is_sweep_override(override: str) -> bool:
    key = override.lstrip("+~").split("=", 1)[0]
    return any(key == name or key.startswith((f"{name}.", f"{name}/")) for name in SWEEP_OVERRIDES)


def _entry_point() -> list[str]:
    import __main__  # imported here, as Lightning does (lightning issue 15218)

    spec = getattr(__main__, "__spec__", None)
    if spec is None:  # started as a script or a console command (lt-train)
        return [sys.executable, os.path.abspath(sys.argv[0])]
    if spec.name.split(".")[0] in POOL_WORKERS:
        raise UserInputError(
            "trainer.strategy=ddp starts its extra processes by running the command again, but this job "
            f"runs in a worker of a process pool ({spec.name}), not in the command you typed. Run DDP jobs "
            "with the default launcher (-m without hydra/launcher=joblib), or on SLURM (hydra/launcher=slurm)."
        )
    return [sys.executable, "-m", spec.name]


def _config_location(hydra_cfg: HydraConf) -> list[str]:
    args = [f"--config-name={hydra_cfg.job.config_name}"] if hydra_cfg.job.config_name else []
    for source in hydra_cfg.runtime.config_sources:
        location = source.path if source.schema == "file" else f"{source.schema}://{source.path}"
        if source.provider == "main":
            args.append(f"--config-path={location}")
        elif source.provider == "command-line":
            args.append(f"--config-dir={location}")
    return args


def job_process_command(local_rank: int) -> tuple[Sequence[str], str]:
    """The command and working folder that start DDP process `local_rank` as this Hydra job's twin."""
    hydra_cfg = HydraConfig.get()
    command = _entry_point() + _config_location(hydra_cfg)
    command += [o for o in hydra_cfg.overrides.hydra if not _is_sweep_override(o)]
    command += list(hydra_cfg.overrides.task)
    # The directory this job already writes to; only the first process writes .hydra/ there.
    command += [
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
        f"hydra.job.name={hydra_cfg.job.name}_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


@contextmanager
def ddp_processes_join_this_job() -> Iterator[None]:
    """Run one Hydra job: its extra DDP processes run exactly this job, and it leaves no process group behind."""
    saved = {name: os.environ.get(name) for name in DDP_ENVIRONMENT}
    lightning_command = subprocess_script._hydra_subprocess_cmd
    subprocess_script._hydra_subprocess_cmd = job_process_command
    try:
        yield
    finally:
        subprocess_script._hydra_subprocess_cmd = lightning_command
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
