"""Predict: image files of any size, mode and background in; digits, probabilities and per-file errors out."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import DictConfig
from PIL import Image

from lightning_template.data.digit_images import UnreadableImageError, mnist_like, read_digit
from lightning_template.data.idx_files import read_idx
from lightning_template.data.mnist import MNISTDataModule
from lightning_template.errors import UserInputError
from lightning_template.models.classifier import ClassifierModule
from lightning_template.models.mlp import MLP
from lightning_template.predict import find_inputs, predict
from lightning_template.runtime import load_standardizer

N_IMAGES = 30


def _test_set(mnist_dir: Path, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    raw = mnist_dir / "MNIST" / "raw"
    images = read_idx(raw / "t10k-images-idx3-ubyte")[:count]
    return images, read_idx(raw / "t10k-labels-idx1-ubyte")[:count].long()


def _on_paper(digit: torch.Tensor, scale: int, canvas: tuple[int, int], at: tuple[int, int]) -> Image.Image:
    """A dark digit, enlarged, off-center on a large light-gray RGB canvas: how a photo or scan looks."""
    ink = Image.fromarray(digit.numpy()).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    paper = Image.new("RGB", canvas, (236, 232, 222))
    paper.paste((30, 30, 60), (*at, at[0] + ink.width, at[1] + ink.height), mask=ink)
    return paper


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """One real epoch of training (about 94% test accuracy); the checkpoint holds the datamodule's statistics."""
    L.seed_everything(0)
    datamodule = MNISTDataModule(data_dir=mnist_dir, download=False)
    model = ClassifierModule(MLP(), optimizer=partial(torch.optim.Adam, lr=1e-3))
    trainer = L.Trainer(
        max_epochs=1,
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


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """Test digits as image files of several kinds, plus files that are not digits."""
    folder = tmp_path_factory.mktemp("images")
    images, _ = _test_set(mnist_dir, N_IMAGES)
    # The first four as users have them: a photo, a JPEG, an inverted BMP, a drawing on a transparent canvas.
    _on_paper(images[0], scale=9, canvas=(400, 330), at=(20, 60)).save(folder / "00.png")
    _on_paper(images[1], scale=6, canvas=(300, 300), at=(110, 70)).save(folder / "01.jpg", quality=85)
    Image.fromarray(255 - images[2].numpy()).save(folder / "02.bmp")
    strokes = np.zeros((28, 28, 4), dtype=np.uint8)
    strokes[..., 3] = images[3].numpy()  # black ink, opaque where the digit is, transparent elsewhere
    Image.fromarray(strokes, mode="RGBA").resize((112, 112)).save(folder / "03.png")
    for i, digit in enumerate(images[4:], start=4):
        Image.fromarray(digit.numpy()).save(folder / f"{i:02d}.png")
    (folder / "notes.txt").write_text("not an image\n")
    Image.new("L", (40, 40), 255).save(folder / "zz_blank.png")
    return folder


def test_predicts_a_folder_of_mixed_files(
    make_cfg: Callable[..., DictConfig], checkpoint: Path, image_folder: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    cfg = make_cfg("predict", [f"ckpt_path={checkpoint}", f"inputs={image_folder}", "batch_size=8"])
    predictions = predict(cfg)

    by_name = {Path(p.path).name: p for p in predictions}
    assert len(predictions) == N_IMAGES + 2
    assert "not an image" in by_name["notes.txt"].error
    assert "blank" in by_name["zz_blank.png"].error
    assert by_name["notes.txt"].digit is None and by_name["zz_blank.png"].probabilities is None

    _, labels = _test_set(mnist_dir, N_IMAGES)
    digits = [p for p in predictions if p.error is None]
    assert [int(Path(p.path).stem) for p in digits] == list(range(N_IMAGES))
    predicted = torch.tensor([p.digit for p in digits])
    assert (predicted == labels).float().mean() >= 0.9
    # The photo-like, JPEG, inverted BMP and transparent versions of four clear digits are all recognised.
    assert predicted[:4].tolist() == labels[:4].tolist()

    with (tmp_path / "predictions.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["path", "digit", *(f"prob_{i}" for i in range(10)), "error"]
    assert len(rows) == N_IMAGES + 2
    for row in rows:
        if row["error"]:
            assert row["digit"] == "" and row["prob_0"] == ""
            continue
        probabilities = [float(row[f"prob_{i}"]) for i in range(10)]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
        assert int(row["digit"]) == int(np.argmax(probabilities))


def test_files_match_the_model_on_the_original_tensors(
    make_cfg: Callable[..., DictConfig], checkpoint: Path, image_folder: Path, mnist_dir: Path
) -> None:
    from lightning_template.runtime import load_classifier

    # Plain 28x28 PNGs of test images 4 and 10..19, as a list of a file and a glob.
    inputs = f"inputs=[{image_folder / '04.png'},{image_folder}/1*.png]"
    cfg = make_cfg("predict", [f"ckpt_path={checkpoint}", inputs])
    predictions = predict(cfg)
    indices = [int(Path(p.path).stem) for p in predictions]
    assert indices == [4, *range(10, 20)]

    images, _ = _test_set(mnist_dir, N_IMAGES)
    model, standardizer = load_classifier(checkpoint).eval(), load_standardizer(checkpoint)
    with torch.inference_mode():
        expected = torch.softmax(model(standardizer(images[indices].unsqueeze(1).float())), dim=1)
    assert [p.digit for p in predictions] == expected.argmax(1).tolist()
    got = torch.tensor([p.probabilities for p in predictions])
    assert (got - expected).abs().max() < 0.05


def test_mnist_digits_come_out_of_preprocessing_as_they_went_in(mnist_dir: Path, tmp_path: Path) -> None:
    images, _ = _test_set(mnist_dir, 100)
    for i, digit in enumerate(images):
        Image.fromarray(digit.numpy()).save(tmp_path / f"{i}.png")
    again = torch.stack([read_digit(tmp_path / f"{i}.png") for i in range(len(images))])
    difference = (again.float() - images.float()).abs().mean(dim=(1, 2)) / 255
    assert again.dtype == torch.uint8 and again.shape == images.shape
    assert difference.mean() < 0.01
    assert difference.max() < 0.15


def test_photo_like_digits_are_cropped_inverted_and_centered(mnist_dir: Path) -> None:
    images, _ = _test_set(mnist_dir, 20)
    for digit, at in zip(images, [(0, 0), (150, 10), (40, 120), (90, 90)] * 5, strict=True):
        photo = _on_paper(digit, scale=5, canvas=(300, 280), at=at)
        gray = torch.from_numpy(np.asarray(photo.convert("F")).copy())
        result = mnist_like(gray).float()
        assert (result.float() - digit.float()).abs().mean() / 255 < 0.08
        rows, cols = torch.nonzero(result, as_tuple=True)
        assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 == 20  # fitted into 20x20
        mass = result.sum()
        center = (
            (result.sum(1) * torch.arange(28)).sum() / mass,
            (result.sum(0) * torch.arange(28)).sum() / mass,
        )
        assert all(abs(c - 14) <= 0.5 for c in center)


def test_unreadable_files_raise_a_clear_error(tmp_path: Path) -> None:
    truncated = tmp_path / "cut.png"
    Image.new("L", (64, 64), 0).save(tmp_path / "whole.png")
    truncated.write_bytes((tmp_path / "whole.png").read_bytes()[:60])
    with pytest.raises(UnreadableImageError, match=r"cut\.png: could not be read"):
        read_digit(truncated)
    (tmp_path / "digit.csv").write_text("1,2,3\n")
    with pytest.raises(UnreadableImageError, match=r"digit\.csv: not an image"):
        read_digit(tmp_path / "digit.csv")


def test_inputs_are_files_folders_globs_or_lists(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "a.jpg", ".hidden.png", "sub/c.png"):
        (tmp_path / name).write_bytes(b"")
    names = lambda paths: [p.relative_to(tmp_path).as_posix() for p in paths]  # noqa: E731
    assert names(find_inputs(str(tmp_path))) == ["a.jpg", "b.png"]  # no hidden files, no subfolders
    assert names(find_inputs(f"{tmp_path}/**/*.png")) == ["b.png", "sub/c.png"]
    assert names(find_inputs([f"{tmp_path}/b.png", str(tmp_path)])) == ["b.png", "a.jpg"]
    with pytest.raises(UserInputError, match=r"nothing/\*\.png matched no files"):
        find_inputs("nothing/*.png")


@pytest.mark.slow
def test_command_line_without_a_checkpoint_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "lightning_template.predict", "inputs=digits/"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "No checkpoint given" in result.stderr
    assert "Traceback" not in result.stderr
