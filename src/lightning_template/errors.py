"""Problems the user can fix get one paragraph and exit code 2; every other error keeps its traceback."""

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path

from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue

log = logging.getLogger(__name__)


class UserError(Exception):
    """A bad value, a missing file or a diverging run: the message names the key and what is allowed."""


def user_error_in(exc: BaseException) -> UserError | None:
    """The UserError behind `exc`, also inside Hydra's InstantiationExceptions, or one for a missing value."""
    while isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, MissingMandatoryValue):  # a `???` in conf/, such as data.root of data=image_folder
        return UserError(f"{exc.full_key} is required: pass {exc.full_key}=<value> on the command line.")
    return exc if isinstance(exc, UserError) else None


# Library notices that say nothing about this run, each with why; the commands and the test suite ignore them.
LIBRARY_NOISE = (
    # TensorBoard's graph (log_graph) and TorchScript export trace with torch.jit, deprecated upstream, and
    # the tracer reads every metric's `_update_called`, which torchmetrics deprecates.
    r"(`\S*(to_torchscript|torch\.jit)\S*` (is|has been) deprecated|This property will be removed in 2\.0\.0)",
    # Raised inside Lightning itself (utilities/_pytree.py) on recent PyTorch; nothing to change here.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # Lightning's all_gather (the test mistakes under DDP) calls a PyTorch function that PyTorch deprecates.
    r"torch\.distributed\.nn\.functional\.all_gather is deprecated",
    # ckpt_path=... continues in the checkpoint's own run directory on purpose.
    r"Checkpoint directory .* exists and is not empty",
    # Printed on every machine with SLURM's client installed; the jobs that srun starts do not see it.
    r"The `srun` command is available on your system but is not used",
    # debug=overfit: Lightning swaps the sampler for a sequential one, as overfitting a few batches needs.
    r"You requested to overfit but enabled (train|val) dataloader shuffling",
    # Nothing is logged per step (the training metrics are epoch values), so a short epoch loses nothing.
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    # The `sweep` and `mlflow` extras pin optuna 2 (on SQLAlchemy 1.4) and mlflow 2 (on old pydantic APIs).
    r"(Deprecated API features detected!|Using `@model_validator` .* on a classmethod|Support for class-based)",
)


def check_local_settings() -> None:
    """A key that only conf/local/default.yaml has is misspelt, and would change nothing: refuse it."""
    local = files("lightning_template.conf") / "local" / "default.yaml"
    if not local.is_file() or not GlobalHydra.instance().is_initialized():
        return
    hydra = HydraConfig.get()
    without = [*hydra.overrides.task, "~local@_global_"]  # the same command without this machine's settings
    others = compose(hydra.job.config_name, without, return_hydra_config=True)
    try:
        OmegaConf.merge(others, OmegaConf.load(str(local)))  # a composed config refuses new keys
    except ConfigKeyError as exc:
        raise UserError(f"conf/local/default.yaml sets {exc.full_key}, which no config has.") from exc


@contextmanager
def report_user_errors() -> Iterator[None]:
    """Every command's frame: no library noise, conf/local checked, a UserError as one paragraph and exit 2."""
    for message in LIBRARY_NOISE:
        warnings.filterwarnings("ignore", message)
    # Advertising for Lightning's cloud services, printed at every fit.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda r: "💡 Tip" not in str(r.msg))
    try:
        check_local_settings()
        yield
    except Exception as exc:
        error = user_error_in(exc)
        if error is None:
            raise
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            log.error("This job failed: %s", error)  # not the sweep: SweepSummary reads error.txt
            Path(HydraConfig.get().runtime.output_dir, "error.txt").write_text(f"{error}\n")
            return
        print(f"Error: {error}", file=sys.stderr)
        for handler in logging.getLogger().handlers:  # the run's log file too (Hydra's train.log)
            if isinstance(handler, logging.FileHandler):
                handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, error, (), None))
        sys.exit(2)
