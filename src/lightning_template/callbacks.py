"""What TensorBoard shows beyond scalars: confusion matrices, HPARAMS, and for images their predictions."""

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torch.utils.tensorboard.summary import hparams
from torchmetrics.classification import MulticlassConfusionMatrix
from torchvision.transforms.functional import pil_to_tensor, to_pil_image
from torchvision.utils import make_grid

Samples = tuple[Tensor, ...]  # images, predictions, labels, confidences: one row per digit
FONT = ImageFont.load_default_imagefont()  # a bitmap font: 3x faster to draw than the default TrueType one


def captioned_grid(
    images: Tensor, preds: Tensor, labels: Tensor, names: Sequence[str], confidence: Tensor | None = None
) -> Tensor:
    """Raw uint8 images, enlarged to be read, each over `p:<predicted> t:<true>`: green if right, red if wrong."""
    captions = [f"p:{names[p]} t:{names[t]}" for p, t in zip(preds.tolist(), labels.tolist(), strict=True)]
    if confidence is not None:
        captions = [f"{caption} {c:.0%}" for caption, c in zip(captions, confidence.tolist(), strict=True)]
    height, width = images.shape[-2] * 2, images.shape[-1] * 2
    tile_width = max(width, *(int(FONT.getlength(caption)) + 4 for caption in captions))
    tiles = []
    for image, caption, right in zip(images.cpu(), captions, (preds == labels).tolist(), strict=True):
        tile = Image.new("RGB", (tile_width, height + 12))
        digit = to_pil_image(image).resize((width, height), Image.Resampling.NEAREST)
        tile.paste(digit, ((tile_width - width) // 2, 0))
        ImageDraw.Draw(tile).text((2, height + 1), caption, fill="lime" if right else "red", font=FONT)
        tiles.append(pil_to_tensor(tile))
    return make_grid(tiles, pad_value=128)


def confusion_image(matrix: Tensor, names: Sequence[str]) -> Tensor:
    """True classes (rows) against predicted ones, shaded; PIL takes 5 ms where matplotlib takes 0.4 s."""
    share, n = (matrix / matrix.sum(1, keepdim=True).clamp(min=1)).cpu(), len(matrix)
    cell = max(32, 6 * len(str(int(matrix.max()))) + 6)  # wide enough for the largest count
    left = max(6 * len(name) for name in [*names, "t\\p"]) + 8
    colours = Image.fromarray(colormaps["Blues"](share.numpy(), bytes=True)[..., :3])
    image = Image.new("RGB", (left + n * cell, (n + 1) * cell), "white")
    image.paste(colours.resize((n * cell, n * cell), Image.Resampling.NEAREST), (left, cell))
    draw = ImageDraw.Draw(image)
    draw.text((4, 10), "t\\p", fill="black", font=FONT)  # true down, predicted across
    for i, name in enumerate(names):
        draw.text((4, (i + 1) * cell + 10), name, fill="black", font=FONT)
        draw.text((left + i * cell + 3, 10), name[: (cell - 4) // 6], fill="black", font=FONT)
        for j, count in enumerate(matrix[i].tolist()):
            colour = "white" if share[i, j] > 0.5 else "black"
            draw.text((left + j * cell + 3, (i + 1) * cell + 10), str(count), fill=colour, font=FONT)
    return pil_to_tensor(image)


def confident_mistakes(samples: Samples, k: int) -> Samples:
    """The k surest wrong predictions, surest first, then right ones to fill k rows as all_gather needs."""
    _, preds, labels, confidences = samples
    rank = confidences - (preds == labels).float()  # every mistake ranks above every right answer
    top = rank.topk(min(k, len(rank))).indices
    return tuple(tensor[top] for tensor in samples)


class PredictionImages(L.Callback):
    """What accuracy cannot tell: confusion matrices and, for images, the images with their predictions."""

    def __init__(self, num_images: int = 16) -> None:
        self.num_images = num_images

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.tensorboard = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        spec = trainer.datamodule.spec  # type: ignore[attr-defined]  # the model's, which the model checks
        self.images = spec.kind == "image"
        # The bitmap font draws Latin-1 only: any other name is drawn as its number, listed in a `classes` text.
        self.names = [n if all(ord(c) < 256 for c in n) else str(i) for i, n in enumerate(spec.classes)]
        if self.tensorboard and trainer.is_global_zero and self.names != spec.classes:  # the legend
            legend = "\n".join(f"- {number}: {name}" for number, name in enumerate(spec.classes))
            self.tensorboard.experiment.add_text("classes", legend)
        self.confusion = {  # the last validation epoch's counts, and the test's
            stage: MulticlassConfusionMatrix(len(self.names)).to(trainer.strategy.root_device)
            for stage in ("val", "test")
        }
        self.mistakes: list[Samples] = []  # each test batch's candidates on this process (one test epoch)

    def draw_confusion(self, trainer: L.Trainer, stage: str) -> None:
        """Every process takes part in computing (which syncs the counts); rank zero draws."""
        if self.tensorboard is None or not self.confusion[stage].update_called:
            return
        matrix = self.confusion[stage].compute()
        if trainer.is_global_zero:
            image = confusion_image(matrix, self.names)
            self.tensorboard.experiment.add_image(f"{stage}/confusion_matrix", image, trainer.global_step)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.confusion["val"].reset()

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        if self.tensorboard is None or trainer.sanity_checking:
            return
        (images, labels), logits = batch, outputs["logits"]
        first = not self.confusion["val"].update_called  # the epoch's first batch: its images are drawn
        self.confusion["val"].update(logits, labels)
        if self.images and trainer.is_global_zero and first:
            k = self.num_images
            grid = captioned_grid(images[:k], logits[:k].argmax(1), labels[:k], self.names)
            self.tensorboard.experiment.add_image("val/predictions", grid, trainer.global_step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.draw_confusion(trainer, "val")

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        if self.tensorboard is None:
            return
        (images, labels), logits = batch, outputs["logits"]
        self.confusion["test"].update(logits, labels)
        if self.images:
            confidences, preds = logits.softmax(1).max(1)
            self.mistakes.append(confident_mistakes((images, preds, labels, confidences), self.num_images))

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.draw_confusion(trainer, "test")
        if self.tensorboard is None or not self.mistakes:
            return
        samples = confident_mistakes(tuple(map(torch.cat, zip(*self.mistakes, strict=True))), self.num_images)
        # Under DDP, every process's k rows (gathered with a leading process dimension): the whole test set's.
        gathered = tuple(trainer.strategy.all_gather(t).reshape(-1, *t.shape[1:]) for t in samples)
        images, preds, labels, confidences = confident_mistakes(gathered, self.num_images)
        wrong = preds != labels
        if trainer.is_global_zero and wrong.any():
            grid = captioned_grid(images[wrong], preds[wrong], labels[wrong], self.names, confidences[wrong])
            self.tensorboard.experiment.add_image("test/mistakes", grid, trainer.global_step)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested settings as `a/b/c` keys with values TensorBoard's HPARAMS tab can show."""
    if isinstance(node, Mapping):
        return {k: v for key, value in node.items() for k, v in flatten(value, f"{prefix}{key}/").items()}
    name = prefix.rstrip("/")
    if name.endswith("_target_"):
        return {name: str(node).rpartition(".")[2]}
    return {name: node if isinstance(node, (int, float, str, bool)) else str(node)}


class LogHyperparameters(L.Callback):
    """Sends `params` to every logger when fitting starts, so that a refused resume writes nothing."""

    def __init__(self, params: Mapping[str, Any], metrics: Sequence[str]) -> None:
        self.params = flatten(params)  # a DictConfig resolves its interpolations as it is read
        self.metrics = dict.fromkeys(metrics, 0.0)  # the columns of the HPARAMS table

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for logger in trainer.loggers:
            logger.log_hyperparams(self.params)
            if isinstance(logger, TensorBoardLogger):  # the values come from the scalars logged later
                for summary in hparams(self.params, self.metrics):
                    logger.experiment.file_writer.add_summary(summary)
