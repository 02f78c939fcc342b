"""Save a resumable checkpoint when a run is stopped by Ctrl-C or SIGTERM (preemption, `kill`)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import lightning as L
from lightning.pytorch import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

# The exit status of a process stopped by SIGTERM, so job schedulers see an interruption, not success.
SIGTERM_EXIT_CODE = 128 + signal.SIGTERM


class InterruptCheckpoint(Callback):
    """Write `last.ckpt` (atomically, through the Trainer) when training is interrupted, then say how to resume.

    Lightning turns SIGTERM into `SIGTERMException` after the current batch and Ctrl-C into
    `KeyboardInterrupt`; other exceptions (bugs, a diverging loss) are left alone so a bad state never
    replaces the last good checkpoint.
    """

    def __init__(self, dirpath: str | Path, filename: str = "last") -> None:
        super().__init__()
        self.dirpath = Path(dirpath)
        self.filename = filename

    @property
    def ckpt_path(self) -> Path:
        return self.dirpath / f"{self.filename}.ckpt"

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)) or not trainer.training:
            return
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)  # full state: resumable
        if trainer.is_global_zero:
            cause = "SIGTERM" if isinstance(exception, SIGTERMException) else "Ctrl-C"
            log.warning(
                "Interrupted by %s at epoch %d, step %d: saved %s. Resume with the same command plus "
                "ckpt_path=last (or ckpt_path=%s).",
                cause,
                trainer.current_epoch,
                trainer.global_step,
                self.ckpt_path,
                self.ckpt_path,
            )
