"""Turn an image file of a handwritten digit (any size, mode or background) into an MNIST-like 28x28 input.

MNIST's own preprocessing, redone: white digit on black, cropped to the digit, fitted into a 20x20 box
keeping its aspect ratio (with anti-aliasing), then placed in a 28x28 field so that its center of mass
falls on the field's center.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from lightning_template.errors import UserInputError

FIELD_SIZE = 28  # MNIST images are 28x28
BOX_SIZE = 20  # the digit's longer side, as in MNIST
CENTER = 14.0  # where the center of mass of MNIST digits lies, in pixel indices (row and column)
NOISE_FLOOR = 0.1  # fainter than this fraction of the strongest stroke is noise (JPEG ringing, paper grain)


class UnreadableImageError(UserInputError):
    """One input file cannot be turned into a digit; prediction reports it and carries on with the rest."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def read_digit(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an image file (PNG, JPEG, BMP, ... anything Pillow opens) as an MNIST-like uint8 (28, 28) digit."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                gray = grayscale(ImageOps.exif_transpose(image))
    except UnidentifiedImageError:
        raise UnreadableImageError(
            path, "not an image file that Pillow can read (PNG, JPEG, BMP, GIF, TIFF, WebP, ...)."
        ) from None
    except (OSError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImageError(path, f"could not be read as an image ({exc}).") from None
    try:
        return mnist_like(gray)
    except ValueError as exc:
        raise UnreadableImageError(path, str(exc)) from None


def grayscale(image: Image.Image) -> torch.Tensor:
    """Luminance as float (H, W), from any mode; transparent pixels become the background of the strokes."""
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        gray_alpha = np.asarray(image.convert("LA"), dtype=np.float32)
        gray, alpha = torch.from_numpy(gray_alpha[..., 0].copy()), torch.from_numpy(gray_alpha[..., 1] / 255)
        if bool((alpha < 1).any()):
            # Drawing apps save strokes on a transparent canvas: put them on the opposite shade.
            ink = (gray * alpha).sum() / alpha.sum().clamp_min(1e-6)
            background = 255.0 if ink < 128 else 0.0
            return gray * alpha + background * (1 - alpha)
        return gray
    # "F" keeps 16-bit and float images' full range; the contrast is stretched in mnist_like anyway.
    return torch.from_numpy(np.asarray(image.convert("F"), dtype=np.float32).copy())


def mnist_like(gray: torch.Tensor) -> torch.Tensor:
    """Preprocess a grayscale image (H, W) as MNIST did: uint8 (28, 28), white digit centered on black."""
    ink = _white_on_black(gray.float())
    rows, cols = torch.nonzero(ink.sum(1)).flatten(), torch.nonzero(ink.sum(0)).flatten()
    digit = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = BOX_SIZE / max(digit.shape)
    size = [max(1, round(side * scale)) for side in digit.shape]
    resized = F.interpolate(
        digit[None, None], size=size, mode="bilinear", antialias=True, align_corners=False
    )
    digit = resized[0, 0].clamp_min(0)
    digit = digit * (255.0 / digit.max())  # thin strokes fade when shrunk; MNIST digits reach full white
    field = torch.zeros(FIELD_SIZE, FIELD_SIZE)
    top, left = (_offset(digit, dim, FIELD_SIZE) for dim in (0, 1))
    field[top : top + size[0], left : left + size[1]] = digit
    return field.round().to(torch.uint8)


def _white_on_black(gray: torch.Tensor) -> torch.Tensor:
    """Stretch to [0, 255] with the background at 0 (inverted if it is light) and its noise removed."""
    border = torch.cat([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    low, high = float(gray.min()), float(gray.max())
    if high - low < 1e-6 * max(1.0, abs(high)):
        raise ValueError("the image is blank (a single shade), so it holds no digit.")
    background = float(border.median())
    if background > (low + high) / 2:  # dark digit on a light background
        gray, border, background = -gray, -border, -background
    ink = (gray - background).clamp_min(0)
    strongest = float(ink.max())
    if strongest == 0:
        raise ValueError("no digit found: nothing stands out from the background.")
    ink = ink * (255.0 / strongest)
    # Scanner or JPEG noise, left as is, would widen the crop: the border mostly holds background only.
    border_noise = float(torch.quantile((border - background).clamp_min(0) * (255.0 / strongest), 0.95))
    ink[ink <= max(NOISE_FLOOR * 255.0, border_noise)] = 0
    if not bool((ink > 0).any()):
        raise ValueError("no digit found: nothing stands out from the background noise.")
    return ink


def _offset(digit: torch.Tensor, dim: int, field: int) -> int:
    """Where the digit starts along `dim` so that its center of mass lands on CENTER, staying in the field."""
    mass = digit.sum(1 - dim)
    center_of_mass = float((mass * torch.arange(len(mass))).sum() / mass.sum())
    return min(max(round(CENTER - center_of_mass), 0), field - len(mass))
