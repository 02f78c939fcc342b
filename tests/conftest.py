"""Shared fixtures: a private copy of the bundled MNIST files and a Hydra config composer."""

from __future__ import annotations

import gzip
import shutil
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[1]
BUNDLED_RAW = REPO / "data" / "MNIST" / "raw"


def write_idx(path: Path, data: torch.Tensor, compress: bool = False) -> Path:
    """Write a uint8 tensor as an IDX file (optionally gzipped), as the MNIST files are stored."""
    payload = bytes([0, 0, 0x08, data.dim()]) + struct.pack(f">{data.dim()}I", *data.shape)
    payload += data.contiguous().numpy().tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir holding the repository's MNIST .gz files, unpacked and verified once per session."""
    from lightning_template.data.mnist import MNISTDataModule

    root = tmp_path_factory.mktemp("data")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for archive in BUNDLED_RAW.glob("*.gz"):
        shutil.copyfile(archive, raw / archive.name)
    MNISTDataModule(data_dir=root, download=False).prepare_data()
    return root


@pytest.fixture
def make_cfg(tmp_path: Path, mnist_dir: Path) -> Callable[..., DictConfig]:
    """Compose `train` or `eval` like the command line would, writing into tmp_path."""

    def _make(config_name: str = "train", overrides: Sequence[str] = ()) -> DictConfig:
        with initialize_config_module("lightning_template.conf", version_base="1.3"):
            cfg = compose(
                config_name,
                overrides=[
                    f"paths.output_dir={tmp_path}",
                    f"paths.data_dir={mnist_dir}",
                    f"paths.log_dir={tmp_path}/logs",
                    *overrides,
                ],
                return_hydra_config=True,
            )
        HydraConfig().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    return _make
