"""Export a checkpoint for deployment: `python -m lightning_template.export ckpt_path=... format=onnx|torchscript`.

The exported model takes raw pixel values (uint8, or floats in [0, 255]) of shape (N, 1, 28, 28) and returns
class probabilities (N, 10): the standardization the model was trained with and the softmax are part of it.
Before the command succeeds, the exported file is run on real MNIST test images and compared with PyTorch.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from torch import nn

from lightning_template.data.batches import Standardizer
from lightning_template.data.idx_files import read_idx
from lightning_template.data.mnist import MNISTDataModule
from lightning_template.errors import UserInputError
from lightning_template.runtime import (
    exit_on_user_error,
    load_classifier,
    load_standardizer,
    silence_known_noise,
)

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}  # format -> default file name
INPUT_DTYPES = {"uint8": torch.uint8, "float32": torch.float32}
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


class ExportMismatchError(RuntimeError):
    """The exported file computes something else than the PyTorch model: it must not be shipped."""


class RawImageClassifier(nn.Module):
    """The network with its input standardization and softmax inside: raw pixels in, probabilities out."""

    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(self, net: nn.Module, standardizer: Standardizer) -> None:
        super().__init__()
        if standardizer.mean is None or standardizer.std is None:
            raise ValueError("The standardizer has no statistics: fit it or load them first.")
        self.net = net
        self.register_buffer("mean", standardizer.mean.detach().clone().float())
        # The same arithmetic as Standardizer, so the exported model matches training exactly.
        self.register_buffer("inv_std", standardizer.std.detach().float().reciprocal())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities for raw images (N, 1, 28, 28), uint8 or float in [0, 255]."""
        return torch.softmax(self.net((images.float() - self.mean) * self.inv_std), dim=1)


@dataclass
class ExportReport:
    """Where the model went and how far its outputs are from PyTorch's."""

    path: Path
    max_abs_diff: float
    images: int


def export(cfg: DictConfig) -> ExportReport:
    """Write the checkpoint's network (standardization included) in `cfg.format`, then check it on test images."""
    _check_choices(cfg)
    if cfg.format == "onnx":
        _require_onnx_packages()
    ckpt_path = None if OmegaConf.is_missing(cfg, "ckpt_path") else cfg.ckpt_path
    classifier = load_classifier(ckpt_path).eval()
    standardizer = load_standardizer(cfg.ckpt_path)  # present: load_classifier checked it
    model = RawImageClassifier(classifier.net, standardizer).eval()
    images = mnist_test_images(Path(cfg.data_dir), cfg.parity_images)

    path = Path(cfg.output_file) if cfg.output_file else Path(cfg.paths.output_dir) / FORMATS[cfg.format]
    path.parent.mkdir(parents=True, exist_ok=True)
    # Traced with two images: torch.export would fix a batch of one as a constant.
    if cfg.format == "onnx":
        dtypes = [INPUT_DTYPES[cfg.input_dtype]]
        run = export_onnx(model, path, images[:2].to(dtypes[0]), cfg.opset_version)
    else:
        dtypes = [torch.uint8, torch.float32]
        run = export_torchscript(model, path, images[:2])
    with torch.inference_mode():  # exactly what eval and predict compute
        expected = torch.softmax(classifier(standardizer(images.float())), dim=1).numpy()
    # Two batch sizes show that the batch dimension is dynamic; TorchScript is checked with both dtypes.
    diff = max(
        float(np.abs(np.concatenate([run(images[:1].to(d)), run(images[1:].to(d))]) - expected).max())
        for d in dtypes
    )
    report = ExportReport(path, diff, len(images))
    _print_report(report, cfg)
    if not diff <= cfg.parity_tolerance:  # also catches NaN
        raise ExportMismatchError(
            f"The exported model at {path} does not match PyTorch: its probabilities differ by up to "
            f"{diff:.3g} on {len(images)} MNIST test images (allowed: {cfg.parity_tolerance:g}). Do not ship "
            "this file; try the other format or another opset_version, and report the problem with the "
            "versions of torch, onnx and onnxruntime."
        )
    return report


def _check_choices(cfg: DictConfig) -> None:
    if cfg.format not in FORMATS:
        raise UserInputError(f"format={cfg.format!r} is not supported: use one of {sorted(FORMATS)}.")
    if cfg.input_dtype not in INPUT_DTYPES:
        raise UserInputError(
            f"input_dtype={cfg.input_dtype!r} is not supported: use one of {list(INPUT_DTYPES)}."
        )
    count = cfg.parity_images
    if isinstance(count, bool) or not isinstance(count, int) or not 2 <= count <= 10_000:
        raise UserInputError(f"parity_images must be a whole number from 2 to 10000, got {count!r}.")


def _print_report(report: ExportReport, cfg: DictConfig) -> None:
    dtypes = cfg.input_dtype if cfg.format == "onnx" else "uint8 or float"
    console = Console()
    console.print(f"[bold]Exported:[/bold] {report.path}", soft_wrap=True)
    console.print(
        f"[bold]Input:[/bold] images, {dtypes} (N, 1, 28, 28); [bold]output:[/bold] probabilities (N, 10)"
    )
    console.print(
        f"[bold]Largest difference from PyTorch[/bold] on {report.images} MNIST test images: "
        f"{report.max_abs_diff:.3g} (allowed: {cfg.parity_tolerance:g})",
        soft_wrap=True,
    )


def mnist_test_images(data_dir: Path, count: int) -> torch.Tensor:
    """The first `count` MNIST test images as uint8 (N, 1, 28, 28): real inputs for the parity check."""
    datamodule = MNISTDataModule(data_dir=data_dir)
    datamodule.prepare_data()  # unpacks (or downloads) and verifies the files
    return read_idx(datamodule.raw_dir / "t10k-images-idx3-ubyte")[:count].unsqueeze(1)


def export_onnx(
    model: nn.Module, path: Path, example: torch.Tensor, opset_version: int | None
) -> Callable[[torch.Tensor], np.ndarray]:
    """Write an ONNX file with a dynamic batch dimension; return a function that runs it in onnxruntime."""
    import onnxruntime

    batch = torch.export.Dim("batch")
    for name in ("onnxscript", "onnx_ir"):  # their INFO lines narrate graph optimization passes
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes about its own internals
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["images"],
            output_names=["probabilities"],
            dynamic_shapes={"images": {0: batch}},
            opset_version=opset_version,
            external_data=False,  # one self-contained file
            dynamo=True,
            verbose=False,
        )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda images: session.run(None, {"images": images.numpy()})[0]


def export_torchscript(
    model: nn.Module, path: Path, example: torch.Tensor
) -> Callable[[torch.Tensor], np.ndarray]:
    """Write a traced TorchScript file; return a function that runs the file as loaded back."""
    with warnings.catch_warnings():
        # PyTorch marks TorchScript as deprecated in favour of torch.export; it is still what many
        # deployments (LibTorch in C++, older serving stacks) load.
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*deprecated")
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(path))
        loaded = torch.jit.load(str(path), map_location="cpu")

    def run(images: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return loaded(images).numpy()

    return run


def _require_onnx_packages() -> None:
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise UserInputError(
            f"format=onnx needs the packages {', '.join(ONNX_PACKAGES)}, and {', '.join(missing)} "
            "is not installed: pip install -e '.[export]' (or pip install onnx onnxscript onnxruntime), "
            "or use format=torchscript."
        )


@hydra.main(version_base="1.3", config_path="pkg://lightning_template.conf", config_name="export")
def main(cfg: DictConfig) -> None:
    """Command-line entry point."""
    silence_known_noise()
    with exit_on_user_error():
        try:
            export(cfg)
        except ExportMismatchError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
