"""Checkpoints: found (`ckpt_path=last`), checked, loaded and written safely, saved on Ctrl-C."""

import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_template.errors import UserError
from lightning_template.models.classifier import STRETCHABLE, ClassifierModule

log = logging.getLogger(__name__)


def read_checkpoint(ckpt_path: str | Path | None, key: str = "ckpt_path") -> dict[str, Any]:
    """A checkpoint written by train (weights_only: no code runs), or why it cannot be read."""
    path = Path(ckpt_path or "")
    if not ckpt_path or not path.is_file():
        raise UserError(f"{key}={ckpt_path} is not a file: pass {key}=<run dir>/checkpoints/<file>.ckpt.")
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
    if not isinstance(checkpoint, dict) or "spec" not in checkpoint.get("hyper_parameters", {}):
        raise UserError(f"{key}={path} was not written by this template (no network or data spec inside).")
    return checkpoint


def load_checkpoint(ckpt_path: str | Path | None, key: str = "ckpt_path") -> ClassifierModule:
    """The model of a checkpoint written by train, with its network, spec and standardization."""
    read_checkpoint(ckpt_path, key)
    return ClassifierModule.load_from_checkpoint(str(ckpt_path), map_location="cpu", weights_only=True)


class InitWeights(L.Callback):
    """Fine-tuning: a new run starts from another run's network weights where names and shapes match."""

    def __init__(self, ckpt_path: str, net: str) -> None:
        """`net`: the `_target_` of this run's network, which must be the checkpoint's."""
        self.ckpt_path, self.source = ckpt_path, load_checkpoint(ckpt_path, key="init_from")
        if (theirs := self.source.hparams["net"]["_target_"]) != net:
            raise UserError(f"init_from={ckpt_path} holds a {theirs} network; this run builds a {net}.")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        net = cast(ClassifierModule, pl_module).net
        wanted = net.state_dict()
        source = self.source.net.state_dict()
        found = {k: v for k, v in source.items() if k in wanted and v.shape == wanted[k].shape}
        net.load_state_dict(found, strict=False)
        skipped = sorted(set(wanted) - set(found))  # another number of classes or width: trained from scratch
        log.info(
            "init_from=%s: %d tensors loaded; skipped (other shapes): %s", self.ckpt_path, len(found), skipped
        )


def check_resume(ckpt_path: Path, model: ClassifierModule, max_epochs: int) -> str | None:
    """Refuse another network or a schedule that cannot stretch, before anything is written; the run dir."""
    saved = read_checkpoint(ckpt_path)
    saved_net = saved["hyper_parameters"]["net"]
    if saved_net != model.hparams["net"]:
        raise UserError(
            f"ckpt_path={ckpt_path} holds another network than the config asks for; resume with the "
            f"model settings it was trained with ({saved_net})."
        )
    before = saved.get("max_epochs", max_epochs)
    kind = getattr((model.scheduler or {}).get("scheduler"), "func", None)  # the class of the partial
    if before != max_epochs and kind is not None and not issubclass(kind, STRETCHABLE):
        raise UserError(
            f"trainer.max_epochs={max_epochs}: ckpt_path={ckpt_path} follows a {before}-epoch {kind.__name__} "
            f"schedule, which cannot be stretched. Resume with trainer.max_epochs={before}, or start a new run "
            "with a fresh schedule from its weights: init_from=<the .ckpt> instead of ckpt_path."
        )
    return str(ckpt_path.parent.parent) if ckpt_path.parent.name == "checkpoints" else None


def find_checkpoint(ckpt_path: str | None, task_dir: str) -> Path | None:
    """`ckpt_path` as a file: `last` is the newest last.ckpt among this task's runs and sweep jobs."""
    if ckpt_path != "last":
        return Path(ckpt_path) if ckpt_path else None
    found = sorted(Path(task_dir).glob("*runs/**/checkpoints/last.ckpt"), key=os.path.getmtime)
    if not found:
        raise UserError(f"ckpt_path=last: no run under {task_dir} has a checkpoints/last.ckpt to resume.")
    return found[-1]


class AtomicCheckpointIO(TorchCheckpointIO):
    """A full disk or a kill mid-save keeps the old file: Lightning's $TMPDIR file is copied across disks."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        partial = Path(f"{path}.partial")  # beside the destination: the rename below cannot be a copy
        try:
            super().save_checkpoint(checkpoint, partial, storage_options)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


class CheckpointOnInterrupt(L.Callback):
    """Ctrl-C or SIGTERM in training saves last.ckpt; unlike OnExceptionCheckpoint, a crash saves none."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if trainer.training and isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            trainer.save_checkpoint(self.path, weights_only=False)  # all of it: optimizer and loops too
