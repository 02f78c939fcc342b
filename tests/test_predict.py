"""Predict: image files of any size, polarity and position in; one CSV row per file out."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from lightning_template.checkpoints import load_checkpoint
from lightning_template.errors import UserError
from lightning_template.predict import find_inputs, predict
from lightning_template.train import train

from tests.conftest import FAST, read_mnist, run_cli

pytestmark = pytest.mark.xdist_group("test_predict")  # one worker trains the module's checkpoint once


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """A checkpoint as `train` writes it, trained once for this file: sure of some digits already."""
    run_dir = tmp_path_factory.mktemp("train")
    overrides = [f"paths.output_dir={run_dir}", f"paths.data_dir={mnist_dir}", "logger=none", "test=false"]
    with initialize_config_module("lightning_template.conf", version_base="1.3"):
        train(compose("train", [*overrides, *FAST, "++trainer.limit_train_batches=10", "optimizer.lr=0.01"]))
    return run_dir / "checkpoints" / "last.ckpt"


def test_digits_of_any_size_polarity_and_position_get_the_models_answer(
    make_cfg: Callable[..., DictConfig], checkpoint: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    model = load_checkpoint(checkpoint).eval()
    images = read_mnist(mnist_dir)[1][0][:100, 0]
    with torch.inference_mode():
        probabilities = model(images.unsqueeze(1)).softmax(dim=1)
    surest = int(probabilities.max(dim=1).values.argmax())  # briefly trained: pick a digit it is sure of
    digit, expected = images[surest].numpy(), int(probabilities[surest].argmax())

    folder = tmp_path / "inputs"
    folder.mkdir()
    Image.fromarray(digit).save(folder / "mnist.png")
    scan = Image.new("L", (300, 200), 255)  # dark on light, five times larger, off-centre, as a JPEG
    scan.paste(Image.fromarray(255 - digit).resize((140, 140), Image.Resampling.BICUBIC), (150, 50))
    scan.save(folder / "scan.jpg", quality=90)
    strokes = np.zeros((56, 56, 4), dtype=np.uint8)  # black strokes on a transparent canvas
    strokes[..., 3] = np.asarray(Image.fromarray(digit).resize((56, 56)))
    Image.fromarray(strokes, mode="RGBA").save(folder / "strokes.png")
    (folder / "notes.txt").write_text("not an image\n")

    csv_path = predict(make_cfg("predict", [f"ckpt_path={checkpoint}", f"inputs={folder}"]))
    assert csv_path == tmp_path / "predictions.csv"
    with csv_path.open() as file:
        rows = {Path(row["path"]).name: row for row in csv.DictReader(file)}
    assert list(rows) == ["mnist.png", "notes.txt", "scan.jpg", "strokes.png"]
    assert list(rows["mnist.png"]) == ["path", "class", *(f"prob_{i}" for i in range(10)), "error"]
    for name in ("mnist.png", "scan.jpg", "strokes.png"):
        assert rows[name]["class"] == str(expected) and rows[name]["error"] == ""
        assert sum(float(rows[name][f"prob_{i}"]) for i in range(10)) == pytest.approx(1, abs=1e-4)
    read_back = [float(rows["mnist.png"][f"prob_{i}"]) for i in range(10)]
    assert read_back == pytest.approx(probabilities[surest].tolist(), abs=0.02)  # a PNG is the same digit
    assert rows["notes.txt"]["class"] == rows["notes.txt"]["prob_0"] == ""
    assert "cannot identify image file" in rows["notes.txt"]["error"]


def test_inputs_are_files_folders_globs_or_lists(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "a.jpg", ".DS_Store", "sub/c.png"):
        (tmp_path / name).touch()
    assert [p.name for p in find_inputs(str(tmp_path))] == [
        "a.jpg",
        "b.png",
        "c.png",
    ]  # not hidden; subfolders too
    assert [p.name for p in find_inputs(f"{tmp_path}/*.png")] == ["b.png"]
    assert [p.name for p in find_inputs(f"{tmp_path}/**/*.png")] == ["b.png", "c.png"]
    files = find_inputs(OmegaConf.create([f"{tmp_path}/b.png", str(tmp_path)]))
    assert [p.name for p in files] == ["b.png", "a.jpg", "c.png"]  # in the order given, each once
    with pytest.raises(UserError, match=r"inputs=nothing/\*\.png matched no files"):
        find_inputs("nothing/*.png")


def test_inputs_that_match_nothing_are_one_paragraph_and_exit_2(checkpoint: Path, tmp_path: Path) -> None:
    result = run_cli(
        "lightning_template.predict", [f"ckpt_path={checkpoint}", "inputs=digits/*.png"], cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.startswith("Error: inputs=digits/*.png matched no files. Pass a file, a folder")
    assert result.stderr.count("\n") == 1, result.stderr


def test_inputs_of_which_none_can_be_read_are_an_error_that_says_why(
    make_cfg: Callable[..., DictConfig], checkpoint: Path, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("not an image\n")
    cfg = make_cfg("predict", [f"ckpt_path={checkpoint}", f"inputs={tmp_path / 'notes.txt'}"])
    with pytest.raises(UserError, match=r"notes\.txt: nothing could be read to predict \(cannot identify"):
        predict(cfg)
    assert "cannot identify image file" in (tmp_path / "predictions.csv").read_text()  # each file's error
