"""Where checkpoints are found (`ckpt_path=last`, the resumed run's directory) and how they are loaded."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from lightning_template.errors import UserError
from lightning_template.models.classifier import ClassifierModule

SAME_RUN_GROUPS = ("model", "experiment")  # ckpt_path=last resumes a run that chose the same of each


def load_checkpoint(ckpt_path: str | Path | None) -> ClassifierModule:
    """The model of a checkpoint written by train (weights_only: no code runs), or why it cannot be."""
    if not ckpt_path:
        raise UserError("No checkpoint given: pass ckpt_path=<run dir>/checkpoints/<file>.ckpt.")
    path = Path(ckpt_path)
    if not path.is_file():
        raise UserError(
            f"ckpt_path={ckpt_path} is not a file: pass a .ckpt from a run's checkpoints/ folder."
        )
    if not zipfile.is_zipfile(path):
        raise UserError(
            f"ckpt_path={path} is damaged or not a PyTorch checkpoint (not a torch.save zip file)."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"ckpt_path={path} holds Python objects besides tensors, so torch.load(weights_only=True) refused "
            "it. Checkpoints of this template never do; unpickle such a file only if you trust its author."
        ) from exc
    except Exception as exc:
        raise UserError(f"ckpt_path={path} is damaged ({exc}).") from exc
    if not isinstance(checkpoint, dict) or "net" not in checkpoint.get("hyper_parameters", {}):
        raise UserError(f"ckpt_path={path} was not written by this template (no network config inside).")
    return ClassifierModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)


def run_choices(run_dir: Path) -> dict[str, Any]:
    """The config groups a run was composed from, as Hydra recorded them ({} if it did not)."""
    path = run_dir / ".hydra" / "hydra.yaml"
    return dict(OmegaConf.load(path).hydra.runtime.choices) if path.is_file() else {}


def find_checkpoint(ckpt_path: str | None, task_dir: str) -> Path | None:
    """`ckpt_path` as a file: `last` is the newest last.ckpt among this task's runs and sweep jobs,
    of those that chose the same model and experiment as this run."""
    if not ckpt_path:
        return None
    if ckpt_path != "last":
        return Path(ckpt_path)
    found = sorted(
        Path(task_dir).glob("*runs/**/checkpoints/last.ckpt"), key=lambda path: path.stat().st_mtime
    )
    if not found:
        raise UserError(f"ckpt_path=last: no run under {task_dir} has a checkpoints/last.ckpt to resume.")
    if not HydraConfig.initialized():  # train(cfg) called from Python: no choices to compare
        return found[-1]
    ours = HydraConfig.get().runtime.choices

    def differences(path: Path) -> list[str]:
        """The overrides that would choose what the checkpoint's run chose."""
        theirs = run_choices(path.parent.parent)
        if not theirs:  # not a run of the command line: nothing to compare
            return []
        return [
            f"{group}={theirs.get(group) or 'null'}"
            for group in SAME_RUN_GROUPS
            if theirs.get(group) != ours.get(group)
        ]

    for path in reversed(found):
        if not differences(path):
            return path
    overrides = " ".join(differences(found[-1]))
    raise UserError(
        f"ckpt_path=last: no last.ckpt under {task_dir} comes from a run with this model and experiment. "
        f"The newest one, {found[-1]}, was trained with {overrides}: run with those to resume it."
    )


def resume_dir(ckpt_path: str | None, task_dir: str, new_dir: str) -> str:
    """Hydra's run directory: a resumed run continues in the directory of its checkpoint."""
    try:
        path = find_checkpoint(ckpt_path, task_dir)
    except UserError:
        return new_dir  # train() reports it, having written nothing into an earlier run
    return str(path.parent.parent) if path and path.parent.name == "checkpoints" else new_dir
