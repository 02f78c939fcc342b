"""Classify image files or table rows: `python -m lightning_template.predict ckpt_path=... inputs=...`."""

import glob
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, ListConfig
from PIL import Image, ImageOps

from lightning_template.checkpoints import load_checkpoint
from lightning_template.data.image_folder import read_image
from lightning_template.data.table import feature_values, read_table
from lightning_template.errors import UserError, report_user_errors

# MNIST's digits are fitted into a 20x20 box, with their centre of mass at (14, 14) of the 28x28 field.
FIELD, BOX, CENTRE = 28, 20, 14.0
Read = tuple[pd.DataFrame, list[torch.Tensor], list[str]]  # what names each input, the inputs read, errors


def find_inputs(inputs: str | list[str] | ListConfig | None) -> list[Path]:
    """The files a path, a folder, a glob or a list of these names, in order and each once."""
    files: dict[Path, None] = {}
    for pattern in map(str, inputs if isinstance(inputs, (list, ListConfig)) else [inputs]):
        path = Path(pattern)
        if path.is_dir():  # with its subfolders, such as an image folder's classes
            found = sorted(path.rglob("*"))
        else:
            found = [path] if path.is_file() else sorted(map(Path, glob.glob(pattern, recursive=True)))
        files.update(dict.fromkeys(p for p in found if p.is_file() and not p.name.startswith(".")))
    if not files:
        raise UserError(
            f"inputs={inputs} matched no files. Pass a file, a folder, a glob in quotes ('digits/**/*.png' searches "
            "subfolders too) or a list (inputs=[a.png,more/]), relative to the current folder."
        )
    return list(files)


def mnist_like(path: Path) -> torch.Tensor:
    """The image's digit drawn as MNIST's are (white on black, 20 px, centred by mass), as the model expects."""
    with Image.open(path) as file:
        image = ImageOps.exif_transpose(file)  # phone photos are stored sideways
    alpha = np.asarray(image.convert("RGBA").getchannel("A"), dtype=np.float32)
    # Strokes on a transparent canvas: the alpha channel is the ink, whatever the strokes' colour.
    pixels = alpha if alpha.min() < 255 else np.asarray(image.convert("L"), dtype=np.float32)
    background = np.median(np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]))
    if background > (pixels.min() + pixels.max()) / 2:  # dark ink on light paper
        pixels, background = 255 - pixels, 255 - background
    ink = np.clip(pixels - background, 0, None)
    ink[ink < 0.1 * ink.max()] = 0  # paper grain and JPEG ringing would widen the crop
    if not ink.any():
        raise ValueError("no digit found: the image is a single shade")
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    digit = Image.fromarray(ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    scale = BOX / max(digit.size)
    digit = digit.resize([max(1, round(side * scale)) for side in digit.size], Image.Resampling.BILINEAR)
    ink = np.asarray(digit) * (255 / np.asarray(digit).max())  # shrunk thin strokes fade; MNIST's are white
    centre = (np.indices(ink.shape) * ink).sum(axis=(1, 2)) / ink.sum()
    top, left = np.clip(np.round(CENTRE - centre), 0, FIELD - np.array(ink.shape)).astype(int)
    field = np.zeros((FIELD, FIELD), dtype=np.uint8)
    field[top : top + ink.shape[0], left : left + ink.shape[1]] = ink.round()
    return torch.from_numpy(field).unsqueeze(0)


def read_images(spec: dict[str, Any], files: list[Path]) -> Read:
    """Each file's pixels as the model takes them, or why it could not be read."""
    (channels, *size), classes = spec["shape"], spec["classes"]
    digits = [channels, *size] == [1, FIELD, FIELD] and classes == list("0123456789")  # an MNIST-like model
    images, errors = [], []
    for path in files:
        try:
            images.append(mnist_like(path) if digits else read_image(path, size, grayscale=channels == 1))
            errors.append("")
        except (OSError, ValueError) as exc:
            errors.append(str(exc))
    return pd.DataFrame({"path": list(map(str, files))}), images, errors


def read_rows(spec: dict[str, Any], files: list[Path]) -> Read:
    """Each row's features, or which cells are empty or no number; every other column is passed through."""
    frame = pd.concat([read_table(path, "inputs") for path in files], ignore_index=True)
    values = feature_values(frame, spec["features"], f"inputs={', '.join(map(str, files))}")
    empty = values.isna().to_numpy()
    errors = [f"empty or no number: {', '.join(values.columns[row])}" if row.any() else "" for row in empty]
    rows = torch.tensor(values[~empty.any(axis=1)].to_numpy(np.float32))
    return frame.drop(columns=spec["features"]), list(rows), errors


def predict(cfg: DictConfig) -> Path:
    """Classify every file (or table row) that `inputs` names; one that cannot be read costs its own row."""
    model = load_checkpoint(cfg.get("ckpt_path")).eval()
    spec, files = model.hparams["spec"], find_inputs(cfg.get("inputs"))
    given, inputs, errors = (read_rows if spec["kind"] == "table" else read_images)(spec, files)
    names = list(spec["classes"])
    with torch.inference_mode():  # in slices: memory for any folder
        parts = [model(part).softmax(dim=1) for part in torch.stack(inputs).split(1024)] if inputs else []
    probabilities = torch.cat([torch.empty(0, len(names)), *parts])
    read = given.index[[not error for error in errors]]
    predicted = pd.DataFrame(probabilities.numpy(), columns=[f"prob_{name}" for name in names], index=read)
    predicted.insert(0, "class", [names[i] for i in probabilities.argmax(dim=1).tolist()])
    # The inputs' other columns first; one named `class` (say, the label) becomes `class_given`.
    result = given.join(predicted, suffixes=("_given", "")).assign(error=errors)
    csv_path = Path(cfg.output_csv)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(csv_path, index=False, float_format="%.6f")

    surest = predicted.max(axis=1, numeric_only=True)
    for number, row in result.head(cfg.table_rows).iterrows():  # the CSV holds them all
        answer = row["error"] or f"{row['class']} ({surest[number]:.6f})"
        print(f"{row.iloc[0] if len(given.columns) else f'row {number}'}  {answer}")
    print(f"Predicted: {len(read)} of {len(result)}; unreadable: {len(result) - len(read)}. All: {csv_path}")
    if not inputs:
        reason = next(iter(errors), "no rows")
        raise UserError(f"inputs={cfg.inputs}: nothing could be read to predict ({reason}); see {csv_path}.")
    return csv_path


@hydra.main(version_base="1.3", config_path="pkg://lightning_template.conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    """Command-line entry point."""
    with report_user_errors():
        predict(cfg)


if __name__ == "__main__":
    main()
