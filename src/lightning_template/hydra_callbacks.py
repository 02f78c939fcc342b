"""Hydra callbacks: checks that must run before Hydra itself starts writing the run directory."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


def _unwritable_reason(directory: Path) -> str | None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return exc.strerror or str(exc)
    probe = directory / ".write_test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


class OutputDirCheck(Callback):
    """Fail in one paragraph, not a traceback, when the logs directory cannot be written."""

    def _check(self, config: DictConfig, dir_key: str) -> None:
        directory = Path(str(OmegaConf.select(config, dir_key)))
        reason = _unwritable_reason(directory)
        if reason is None:
            return
        log_dir = OmegaConf.select(config, "paths.log_dir", default="?")
        print(
            f"Error: cannot write the run directory {directory} ({reason}). It lies under "
            f"paths.log_dir={log_dir}; point paths.log_dir (or paths.root_dir) at a folder you can write to. "
            "Nothing was written.",
            file=sys.stderr,
        )
        sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")
