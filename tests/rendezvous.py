"""A test-only callback, added from the command line, that proves the jobs of a sweep run at the same time."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import lightning as L


class Rendezvous(L.Callback):
    """Each job checks in at the start of training, then waits until `parties` jobs have checked in.

    Jobs launched one after the other never meet: the first one fails after `timeout_s`. Each job also
    writes `<dirpath>/<pid>.json` with its process id and when it arrived and left.
    """

    def __init__(self, dirpath: str, parties: int, timeout_s: float = 120.0) -> None:
        self.dirpath = Path(dirpath)
        self.parties = parties
        self.timeout_s = timeout_s

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        arrived = time.time()
        (self.dirpath / f"{os.getpid()}.arrived").touch()
        while len(list(self.dirpath.glob("*.arrived"))) < self.parties:
            if time.time() - arrived > self.timeout_s:
                raise TimeoutError(f"only one job at a time: no other job started within {self.timeout_s} s")
            time.sleep(0.05)
        record = {"pid": os.getpid(), "arrived": arrived, "met": time.time()}
        (self.dirpath / f"{os.getpid()}.json").write_text(json.dumps(record))
