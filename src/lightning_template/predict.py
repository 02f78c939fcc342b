"""Classify image files: `python -m lightning_template.predict ckpt_path=... inputs=...`."""

from __future__ import annotations

import csv
import glob
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig
from PIL import Image, ImageOps

from lightning_template.checkpoints import load_checkpoint
from lightning_template.data.image_folder import read_image
from lightning_template.errors import UserError, report_user_errors

# MNIST's digits are fitted into a 20x20 box, with their centre of mass at (14, 14) of the 28x28 field.
FIELD, BOX, CENTRE = 28, 20, 14.0


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
            f"inputs={inputs} matched no files. Pass an image file, a folder, a glob in quotes "
            "(inputs='digits/*.png', or 'digits/**/*.png' for subfolders too) or a list (inputs=[a.png,more/]); "
            "relative paths start from the current folder."
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


def predict(cfg: DictConfig) -> Path:
    """Classify every file that `inputs` names; an unreadable file costs its own row, not the run."""
    model = load_checkpoint(cfg.get("ckpt_path")).eval()
    files = find_inputs(cfg.get("inputs"))
    (channels, *size), names = model.hparams["input_shape"], list(model.hparams["class_names"])
    digits = [channels, *size] == [1, FIELD, FIELD] and names == list("0123456789")  # an MNIST-like model
    images, errors = {}, {}
    for path in files:
        try:
            images[path] = mnist_like(path) if digits else read_image(path, size, grayscale=channels == 1)
        except (OSError, ValueError) as exc:
            errors[path] = str(exc)
    probabilities: dict[Path, list[float]] = {}
    if images:
        with torch.inference_mode():  # in slices: memory for any folder
            logits = torch.cat([model(batch) for batch in torch.stack(list(images.values())).split(1024)])
        probabilities = dict(zip(images, logits.softmax(dim=1).tolist(), strict=True))

    rows = []
    for path in files:
        p = probabilities.get(path)
        cells = [names[int(np.argmax(p))], *(f"{q:.6f}" for q in p)] if p else [""] * (len(names) + 1)
        rows.append([str(path), *cells, errors.get(path, "")])
    csv_path = Path(cfg.output_csv)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "class", *(f"prob_{name}" for name in names), "error"])
        writer.writerows(rows)

    for file_name, name, *probs, error in rows[: cfg.table_rows]:  # the CSV holds them all
        print(f"{file_name}  {error or f'{name} ({probs[names.index(name)]})'}")
    print(f"Files: {len(rows)}, unreadable: {len(errors)}. All predictions: {csv_path}")
    if not images:
        reason = next(iter(errors.values()))
        raise UserError(f"inputs={cfg.inputs}: no file could be read as an image ({reason}); see {csv_path}.")
    return csv_path


@hydra.main(version_base="1.3", config_path="pkg://lightning_template.conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    """Command-line entry point."""
    with report_user_errors():
        predict(cfg)


if __name__ == "__main__":
    main()
