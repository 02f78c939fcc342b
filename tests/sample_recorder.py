"""A test-only callback, added from the command line, that records which training samples each DDP rank fetched."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L


class SampleRecorder(L.Callback):
    """Writes `<dirpath>/rank<r>.json`: the training-set indices this process fetched, epoch by epoch."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.epochs: dict[int, list[int]] = defaultdict(list)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.train_dataloader
        self.sampler = type(loader.sampler).__name__
        dataset = loader.dataset
        fetch = dataset.__getitems__

        def recording_fetch(indices: Sequence[int]) -> Any:
            self.epochs[trainer.current_epoch].extend(int(i) for i in indices)
            return fetch(indices)

        dataset.__getitems__ = recording_fetch
        self.train_size = len(dataset)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        record = {"sampler": self.sampler, "train_size": self.train_size, "epochs": self.epochs}
        (self.dirpath / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
