"""Images for TensorBoard: labelled digit grids drawn with PIL (cheap enough for every validation epoch)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image, ImageDraw, ImageFont

RIGHT = (90, 220, 90)  # caption colour of a correct prediction
WRONG = (255, 80, 80)  # and of a mistake
CAPTION_PX = 12  # height of the caption strip under each tile
PADDING_PX = 2


def tensorboard_loggers(trainer: Trainer) -> list[TensorBoardLogger]:
    """The run's TensorBoard loggers: image and figure callbacks stay idle without one."""
    return [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


def unit_range(images: torch.Tensor, trainer: Trainer | None = None) -> torch.Tensor:
    """Undo the datamodule's standardization (or stretch each image) so pixels lie in [0, 1] for display."""
    standardizer = getattr(getattr(trainer, "datamodule", None), "standardizer", None)
    mean, std = getattr(standardizer, "mean", None), getattr(standardizer, "std", None)
    images = images.detach().float().cpu()
    if isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor):
        return ((images * std + mean) / 255.0).clamp(0.0, 1.0)
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    return (images - low) / (high - low).clamp_min(1e-8)


def labelled_grid(
    images: torch.Tensor,
    captions: Sequence[str],
    correct: Sequence[bool],
    columns: int = 8,
    scale: int = 2,
) -> np.ndarray:
    """Tile images (N, C, H, W in [0, 1]) into one HWC uint8 picture, each with a green or red caption."""
    pixels = (images.detach().float().cpu().numpy() * 255 + 0.5).astype(np.uint8)
    pixels = pixels.repeat(scale, axis=2).repeat(scale, axis=3)  # nearest-neighbour zoom
    pixels = np.broadcast_to(pixels, (len(pixels), 3, *pixels.shape[2:])).transpose(0, 2, 3, 1)
    count, height, width = pixels.shape[:3]
    rows = -(-count // columns)
    cell_h, cell_w = height + CAPTION_PX + PADDING_PX, width + PADDING_PX
    canvas = np.full((rows * cell_h + PADDING_PX, columns * cell_w + PADDING_PX, 3), 90, dtype=np.uint8)
    for i in range(count):
        row, col = divmod(i, columns)
        top, left = PADDING_PX + row * cell_h, PADDING_PX + col * cell_w
        canvas[top : top + height, left : left + width] = pixels[i]
        canvas[top + height : top + height + CAPTION_PX, left : left + width] = 0
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    # The bitmap font: a twentieth of the cost of the scalable one, and crisp at this size.
    font = getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)()
    for i, (caption, ok) in enumerate(zip(captions, correct, strict=True)):
        row, col = divmod(i, columns)
        top, left = PADDING_PX + row * cell_h, PADDING_PX + col * cell_w
        draw.text((left + 1, top + height), caption, fill=RIGHT if ok else WRONG, font=font)
    return np.asarray(picture)


def log_image(trainer: Trainer, tag: str, image: np.ndarray) -> None:
    """Write an HWC image to every TensorBoard logger, at the step the scalars of this moment use."""
    for logger in tensorboard_loggers(trainer):
        logger.experiment.add_image(tag, image, global_step=trainer.global_step, dataformats="HWC")
