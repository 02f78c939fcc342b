"""Carry the random number generators' state in checkpoints, so a resumed run draws what it would have."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch


class RNGStateCheckpoint(L.Callback):
    """Dropout and augmentation draw from the global generators; Lightning's checkpoints don't save them.

    Stored as tensors and plain numbers, so checkpoints still load with `weights_only=True`. Each process
    under DDP has its own generators; only rank 0's are saved and restored on every rank.
    """

    def state_dict(self) -> dict[str, Any]:
        np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
        py_version, py_state, py_gauss = random.getstate()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": {
                "kind": str(np_kind),
                "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                "pos": int(np_pos),
                "has_gauss": int(np_has_gauss),
                "cached_gaussian": float(np_gauss),
            },
            "python": {"version": py_version, "state": torch.tensor(py_state), "gauss": py_gauss},
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        np_state = state_dict["numpy"]
        np.random.set_state(
            (
                np_state["kind"],
                np_state["keys"].numpy().astype(np.uint32),
                np_state["pos"],
                np_state["has_gauss"],
                np_state["cached_gaussian"],
            )
        )
        py = state_dict["python"]
        random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
