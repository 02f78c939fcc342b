"""Shared fixtures: a private copy of the bundled MNIST files, and configs composed as the command line does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from lightning_template.data.datamodule import InMemoryDataset, InputSpec
from lightning_template.errors import LIBRARY_NOISE

REPO = Path(__file__).resolve().parents[1]
Examples = tuple[torch.Tensor, torch.Tensor]  # inputs (N, *shape) and labels (N,)
# pytest -n runs one worker per core: a second torch thread per worker (and per subprocess) would only
# make them wait for each other.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# A few batches of each stage: enough to exercise every code path in seconds.
MNIST_SPEC = InputSpec(
    "image", [1, 28, 28], "uint8", list("0123456789")
).description()  # as a checkpoint has it
FAST = [
    "++trainer.max_epochs=1",
    "++trainer.limit_train_batches=5",
    "++trainer.limit_val_batches=2",
    "++trainer.limit_test_batches=2",
    "++trainer.num_sanity_val_steps=0",
    "++trainer.enable_progress_bar=false",
    "++trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
    "data.eval_batch_size=500",
]


def pytest_configure(config: pytest.Config) -> None:
    """The library warnings the commands ignore (errors.LIBRARY_NOISE); any other warning fails a test."""
    for message in LIBRARY_NOISE:
        config.addinivalue_line("filterwarnings", f"ignore:{message}")


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir holding the repository's MNIST files, unpacked once per session."""
    root = tmp_path_factory.mktemp("data")
    shutil.copytree(REPO / "data" / "MNIST" / "raw", root / "MNIST" / "raw")
    read_mnist(root)
    return root


def examples(data: InMemoryDataset) -> Examples:
    """A dataset's inputs and labels, in its order."""
    return data.inputs[data.indices], data.labels[data.indices]


def read_mnist(data_dir: Path, dataset: str = "mnist") -> tuple[Examples, Examples]:
    """The training and test images and labels, read as Lightning does: prepare_data, then (setup's) load."""
    from lightning_template.data.mnist import MNISTDataModule

    datamodule = MNISTDataModule(data_dir=data_dir, dataset=dataset)
    datamodule.prepare_data()
    train, test, _, _ = datamodule.load()
    return examples(train), examples(test)


@pytest.fixture
def make_cfg(tmp_path: Path, mnist_dir: Path) -> Callable[..., DictConfig]:
    """Compose `train`, `eval`, `predict` or `export` like the command line would, writing into tmp_path."""

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


def run_cli(module: str, args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `python -m <module> <args>` in `cwd`, the way a user does."""
    env = {key: value for key, value in os.environ.items() if key != "PROJECT_ROOT"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
