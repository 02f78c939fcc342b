"""Where checkpoints live and how they are written: atomic saves, `ckpt_path=last`, resuming in place."""

from __future__ import annotations

import os
import pickle
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import OmegaConf

from lightning_template.errors import UserInputError

LAST = "last"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint next to its target and renames it, so a kill mid-save never leaves half a file.

    Lightning's own save goes through a temporary file in the system's temp folder; when that folder is on
    another file system (common on clusters), the final move is a copy that a hard kill can cut short.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):  # remote storage: fsspec's own transaction handles it
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True` (no code runs), or say in one paragraph why not."""
    if not zipfile.is_zipfile(path):
        raise UserInputError(f"ckpt_path={path} is not a checkpoint: it is not a file written by torch.save.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserInputError(
            f"ckpt_path={path} holds Python objects besides tensors and plain data, so it is not loaded "
            f"(torch.load with weights_only=True refused: {str(exc).splitlines()[-1]}). This template's "
            "checkpoints never need that; only unpickle such a file if you trust whoever wrote it."
        ) from exc
    except Exception as exc:
        raise UserInputError(f"ckpt_path={path} is damaged and cannot be read ({exc}).") from exc
    if not isinstance(checkpoint, dict):
        raise UserInputError(
            f"ckpt_path={path} holds a {type(checkpoint).__name__}, not a Lightning checkpoint."
        )
    return checkpoint


def check_same_network(path: Path, checkpoint: dict[str, Any], network: dict[str, Any]) -> None:
    """Refuse to resume into a network of another shape, naming what differs instead of a size mismatch."""
    saved = checkpoint.get("hyper_parameters", {}).get("net")
    if not isinstance(saved, dict):
        raise UserInputError(
            f"ckpt_path={path} is not a checkpoint of this template's ClassifierModule (it has no network "
            "config in hyper_parameters), so training cannot resume from it."
        )
    differences = [
        f"{key}: {saved.get(key)!r} in the checkpoint, {network.get(key)!r} in the config"
        for key in sorted(set(saved) | set(network))
        if saved.get(key) != network.get(key)
    ]
    if differences:
        raise UserInputError(
            f"ckpt_path={path} holds a different network than the config asks for ("
            + "; ".join(differences)
            + "). Resume with the model settings the checkpoint was trained with (drop those model.* "
            "overrides), or start a new run without ckpt_path."
        )


def find_last_checkpoint(log_dir: str | Path, task_name: str) -> Path | None:
    """The most recently written `last.ckpt` among the runs of one task (single runs and sweep jobs)."""
    task_dir = Path(log_dir) / task_name
    candidates = [
        *task_dir.glob("runs/*/checkpoints/last.ckpt"),
        *task_dir.glob("multiruns/*/*/checkpoints/last.ckpt"),
    ]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def resolve_ckpt_path(ckpt_path: str | Path | None, log_dir: str | Path, task_name: str) -> Path | None:
    """Turn `ckpt_path` (None, `last` or a path) into an existing file, or explain what is wrong."""
    if ckpt_path is None or str(ckpt_path) == "":
        return None
    if str(ckpt_path) == LAST:
        found = find_last_checkpoint(log_dir, task_name)
        if found is None:
            raise UserInputError(
                f"ckpt_path=last: no earlier run of task '{task_name}' has a checkpoints/last.ckpt under "
                f"{Path(log_dir) / task_name}. Give a checkpoint file instead (ckpt_path=<run>/checkpoints/"
                "last.ckpt), or check task_name and paths.log_dir."
            )
        return found
    path = Path(ckpt_path)
    if not path.is_file():
        raise UserInputError(
            f"ckpt_path={ckpt_path} does not exist or is not a file. Pass a .ckpt written by train, or "
            "ckpt_path=last for the newest last.ckpt of this task."
        )
    return path


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run directory a checkpoint was written in, if it sits in this template's layout."""
    run_dir = checkpoint.resolve().parent.parent
    if checkpoint.resolve().parent.name == "checkpoints" and (run_dir / ".hydra").is_dir():
        return run_dir
    return None


def _resume_run_dir(ckpt_path: str | None, log_dir: str, task_name: str, new_dir: str) -> str:
    """Hydra's run dir: the checkpoint's own run when resuming, so logs and curves continue there."""
    try:
        checkpoint = resolve_ckpt_path(ckpt_path, log_dir, task_name)
    except UserInputError:
        return new_dir  # train() reports the problem, with nothing written to earlier runs
    previous = run_dir_of(checkpoint) if checkpoint is not None else None
    return str(previous) if previous is not None else new_dir


def _resume_output_subdir(ckpt_path: str | None) -> str:
    """Keep the first run's .hydra/ config intact; each resumption writes its own next to it."""
    if ckpt_path is None or str(ckpt_path) == "":
        return ".hydra"
    return f".hydra/resumed_{datetime.now():%Y-%m-%d_%H-%M-%S_%f}"


def register_resolvers() -> None:
    """Make `${resume_run_dir:...}` and `${resume_output_subdir:...}` available to the configs."""
    OmegaConf.register_new_resolver("resume_run_dir", _resume_run_dir, replace=True)
    OmegaConf.register_new_resolver("resume_output_subdir", _resume_output_subdir, replace=True)
