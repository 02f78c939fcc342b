"""Export: ONNX and TorchScript files that take raw pixels and compute what the PyTorch model computes."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import DictConfig

from lightning_template import export as export_module
from lightning_template.data.idx_files import read_idx
from lightning_template.data.mnist import MNISTDataModule
from lightning_template.errors import UserInputError
from lightning_template.export import ExportMismatchError, export
from lightning_template.models.classifier import ClassifierModule
from lightning_template.models.mlp import MLP
from lightning_template.runtime import load_classifier, load_standardizer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """A briefly trained model with per-pixel statistics, so the folded-in standardization matters."""
    L.seed_everything(0)
    datamodule = MNISTDataModule(data_dir=mnist_dir, download=False, normalize="per_pixel")
    model = ClassifierModule(MLP(), optimizer=partial(torch.optim.Adam, lr=1e-3))
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=100,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule)
    path = tmp_path_factory.mktemp("model") / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


def _expected(checkpoint: Path, images: torch.Tensor) -> np.ndarray:
    """What the PyTorch model says about raw uint8 images, standardized the way eval does it."""
    model, standardizer = load_classifier(checkpoint).eval(), load_standardizer(checkpoint)
    with torch.inference_mode():
        return torch.softmax(model(standardizer(images.float())), dim=1).numpy()


def _images(mnist_dir: Path, start: int, count: int) -> torch.Tensor:
    raw = read_idx(mnist_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte")
    return raw[start : start + count].unsqueeze(1)


def test_onnx_file_takes_uint8_batches_of_any_size(
    make_cfg: Callable[..., DictConfig], checkpoint: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    import onnxruntime

    report = export(make_cfg("export", [f"ckpt_path={checkpoint}", "format=onnx"]))
    assert report.path == tmp_path / "model.onnx"
    assert report.max_abs_diff < 1e-5 and report.images == 256

    session = onnxruntime.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    assert model_input.type == "tensor(uint8)"
    images = _images(mnist_dir, 1000, 7)  # not among the images the export was checked on
    for batch in (images[:1], images[1:]):
        (probabilities,) = session.run(None, {model_input.name: batch.numpy()})
        assert probabilities.shape == (len(batch), 10)
        assert np.abs(probabilities - _expected(checkpoint, batch)).max() < 1e-5


def test_torchscript_file_takes_uint8_and_float_batches(
    make_cfg: Callable[..., DictConfig], checkpoint: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "deploy" / "digits.pt"
    report = export(
        make_cfg("export", [f"ckpt_path={checkpoint}", "format=torchscript", f"output_file={target}"])
    )
    assert report.path == target and report.max_abs_diff < 1e-5

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream
        loaded = torch.jit.load(str(target))
    images = _images(mnist_dir, 2000, 5)
    expected = _expected(checkpoint, images)
    for batch in (images, images.double(), images[:1].float()):
        with torch.inference_mode():
            probabilities = loaded(batch).numpy()
        assert np.abs(probabilities - expected[: len(batch)]).max() < 1e-5


def test_an_export_that_computes_something_else_fails(
    make_cfg: Callable[..., DictConfig], checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_export = export_module.export_torchscript

    def slightly_off(*args: object) -> Callable[[torch.Tensor], np.ndarray]:
        run = real_export(*args)  # type: ignore[arg-type]
        return lambda images: run(images) + 1e-4

    monkeypatch.setattr(export_module, "export_torchscript", slightly_off)
    with pytest.raises(ExportMismatchError, match=r"differ by up to 0\.0001"):
        export(make_cfg("export", [f"ckpt_path={checkpoint}", "format=torchscript"]))


@pytest.mark.parametrize(
    ("override", "needle"),
    [("format=tflite", "format='tflite' is not supported"), ("input_dtype=int8", "input_dtype='int8'")],
)
def test_unknown_choices_are_refused(
    make_cfg: Callable[..., DictConfig], checkpoint: Path, override: str, needle: str
) -> None:
    with pytest.raises(UserInputError, match=needle):
        export(make_cfg("export", [f"ckpt_path={checkpoint}", override]))
