"""Where checkpoints are found (`ckpt_path=last`), how they are loaded and written, and the checkpoint saved
on Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import OmegaConf

from lightning_template.errors import UserError
from lightning_template.models.classifier import STRETCHABLE, ClassifierModule

log = logging.getLogger(__name__)
SAME_RUN_GROUPS = ("model", "experiment")  # ckpt_path=last resumes a run that chose the same of each


def load_checkpoint(ckpt_path: str | Path | None, key: str = "ckpt_path") -> ClassifierModule:
    """The model of a checkpoint written by train (weights_only: no code runs), or why it cannot be."""
    if not ckpt_path:
        raise UserError(f"No checkpoint given: pass {key}=<run dir>/checkpoints/<file>.ckpt.")
    path = Path(ckpt_path)
    if not path.is_file():
        raise UserError(f"{key}={ckpt_path} is not a file: pass a .ckpt from a run's checkpoints/ folder.")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{key}={path} is damaged or not a PyTorch checkpoint (not a torch.save zip file).")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"{key}={path} holds Python objects besides tensors, so torch.load(weights_only=True) refused "
            "it. Checkpoints of this template never do; unpickle such a file only if you trust its author."
        ) from exc
    except Exception as exc:
        raise UserError(f"{key}={path} is damaged ({exc}).") from exc
    if not isinstance(checkpoint, dict) or "net" not in checkpoint.get("hyper_parameters", {}):
        raise UserError(f"{key}={path} was not written by this template (no network config inside).")
    return ClassifierModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)


def init_weights(model: ClassifierModule, ckpt_path: str) -> None:
    """Start a new run from another run's network weights: each tensor whose name and shape match."""
    source = load_checkpoint(ckpt_path, key="init_from")
    theirs, ours = source.hparams["net"]["_target_"], model.hparams["net"]["_target_"]
    if theirs != ours:
        raise UserError(f"init_from={ckpt_path} holds a {theirs} network; this run builds a {ours}.")
    wanted = model.net.state_dict()
    found = {k: v for k, v in source.net.state_dict().items() if k in wanted and v.shape == wanted[k].shape}
    model.net.load_state_dict(found, strict=False)
    skipped = sorted(set(wanted) - set(found))  # another number of classes or width: trained from scratch
    log.info("init_from=%s: %d tensors loaded; skipped (other shapes): %s", ckpt_path, len(found), skipped)


def check_resume(ckpt_path: Path, model: ClassifierModule, max_epochs: int) -> None:
    """Refuse, before anything is written, to resume into another network or to stretch a schedule that
    cannot be stretched (ClassifierModule's resume_schedule stretches the others)."""
    saved_net = load_checkpoint(ckpt_path).hparams["net"]
    if saved_net != model.hparams["net"]:
        raise UserError(
            f"ckpt_path={ckpt_path} holds another network than the config asks for; resume with the "
            f"model settings it was trained with ({saved_net})."
        )
    before = torch.load(ckpt_path, map_location="cpu", weights_only=True).get("max_epochs", max_epochs)
    factory = (model.scheduler or {}).get("scheduler")
    kind = getattr(factory, "func", factory)  # the class of a partial
    if before != max_epochs and kind is not None and not issubclass(kind, STRETCHABLE):
        raise UserError(
            f"trainer.max_epochs={max_epochs}: the run of ckpt_path={ckpt_path} was planned for {before} "
            f"epochs, and its {kind.__name__} schedule cannot be stretched (one-cycle's warm-up and "
            f"annealing are fixed when it starts). Resume with trainer.max_epochs={before}, or start a new "
            "run with a fresh schedule from its weights: init_from=<the .ckpt> instead of ckpt_path."
        )


def run_choices(checkpoint: Path) -> dict[str, Any]:
    """The config groups the checkpoint's run chose, as Hydra recorded them ({} if it did not)."""
    path = checkpoint.parent.parent / ".hydra" / "hydra.yaml"
    return dict(OmegaConf.load(path).hydra.runtime.choices) if path.is_file() else {}


def find_checkpoint(ckpt_path: str | None, task_dir: str) -> Path | None:
    """`ckpt_path` as a file: `last` is the newest last.ckpt among this task's runs and sweep jobs,
    of those whose run chose the same model and experiment as this one."""
    if ckpt_path != "last":
        return Path(ckpt_path) if ckpt_path else None
    found = sorted(Path(task_dir).glob("*runs/**/checkpoints/last.ckpt"), key=lambda p: -p.stat().st_mtime)
    if not found:
        raise UserError(f"ckpt_path=last: no run under {task_dir} has a checkpoints/last.ckpt to resume.")
    ours = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}

    def differences(path: Path) -> list[str]:
        """The overrides that would choose what the checkpoint's run chose (none for a run without Hydra)."""
        theirs = run_choices(path) if ours else {}
        return [
            f"{g}={theirs.get(g) or 'null'}"
            for g in SAME_RUN_GROUPS
            if theirs and theirs.get(g) != ours.get(g)
        ]

    same = next((path for path in found if not differences(path)), None)
    if same is None:
        raise UserError(
            f"ckpt_path=last: no last.ckpt under {task_dir} comes from a run with this model and experiment. "
            f"The newest one, {found[0]}, was trained with {' '.join(differences(found[0]))}: run with those "
            "to resume it."
        )
    return same


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file beside it, then rename it into place: a full disk or a kill
    during a save leaves the previous file whole. Lightning's own temporary file is in $TMPDIR, and moving
    it onto another disk (a tmpfs /tmp) is a copy that a full disk truncates."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with temporary.open("wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())  # on disk before the rename, or a power loss could keep an empty file
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)


class CheckpointOnInterrupt(L.Callback):
    """Ctrl-C or SIGTERM (a preemption) saves last.ckpt, which `ckpt_path=last` resumes. Not Lightning's
    OnExceptionCheckpoint, which also saves after a crash and makes every new fit warn about resuming."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if trainer.training and isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            trainer.save_checkpoint(self.path, weights_only=False)  # all of it: optimizer and loops too
