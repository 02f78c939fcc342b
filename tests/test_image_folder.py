"""Your own images (data=image_folder): train, eval, predict and export on a fabricated folder of classes."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_template.checkpoints import load_checkpoint
from lightning_template.data.image_folder import ImageFolderDataModule, read_image
from lightning_template.errors import UserError
from lightning_template.eval import evaluate
from lightning_template.export import export
from lightning_template.predict import predict
from lightning_template.train import train

from tests.conftest import examples, run_cli

pytestmark = pytest.mark.xdist_group("test_image_folder")  # one worker trains each model's run once

CLASSES = ["cat", "dog", "fox"]
QUIET = [  # what conftest's FAST turns off, without its batch limits: the folder is tiny anyway
    "++trainer.num_sanity_val_steps=0",
    "++trainer.enable_progress_bar=false",
    "++trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
]


def pattern(name: str, rng: np.random.Generator, size: tuple[int, int] = (48, 48)) -> np.ndarray:
    """uint8 (H, W, 3): each class its colour and stripes (cat red across, dog green down, fox blue checks)."""
    y, x = np.mgrid[: size[0], : size[1]]
    stripes = {"cat": y // 4 % 2, "dog": x // 4 % 2, "fox": (y // 6 + x // 6) % 2}[name]
    colour = {"cat": (200, 60, 40), "dog": (50, 180, 60), "fox": (40, 70, 210)}[name]
    pixels = np.asarray(colour) * (0.5 + 0.5 * stripes[..., None]) + rng.normal(0, 12, (*size, 3))
    return pixels.clip(0, 255).astype(np.uint8)


def write_folder(root: Path, per_class: dict[str, int], seed: int = 0, gray: bool = False) -> Path:
    """`root/<split>/<class>/<i>.png` with per_class={"train": 12, "test": 4}: noisy, so no two alike."""
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                image = Image.fromarray(pattern(name, rng))
                (image.convert("L") if gray else image).save(root / split / name / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 training images a class and a 60x40 JPEG dog; 4 test images a class, one test fox drawn like a cat."""
    root = write_folder(tmp_path_factory.mktemp("pets"), {"train": 12, "test": 4})
    rng = np.random.default_rng(1)
    Image.fromarray(pattern("dog", rng, size=(40, 60))).save(root / "train" / "dog" / "wide.jpg", quality=90)
    # A mislabelled test image: a model that learnt the colours gets it wrong, so test/mistakes has a grid.
    Image.fromarray(pattern("cat", rng)).save(root / "test" / "fox" / "00.png")
    return root


class Run(NamedTuple):
    model: str
    dir: Path
    metrics: dict[str, float]

    @property
    def best(self) -> Path:
        (best,) = (self.dir / "checkpoints").glob("epoch_*.ckpt")
        return best


@pytest.fixture(scope="module", params=["cnn", "mlp"])
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, folder: Path) -> Run:
    """`train data=image_folder data.root=<folder>` with each model, for 3 epochs, logging to TensorBoard."""
    run_dir = tmp_path_factory.mktemp(f"train_{request.param}")
    overrides = [
        f"paths.output_dir={run_dir}",
        f"paths.log_dir={run_dir}/logs",
        "data=image_folder",
        f"data.root={folder}",
        f"data.cache_dir={run_dir}/cache",
        "data.image_size=[48,48]",
        "data.batch_size=8",
        f"model={request.param}",
        "trainer.max_epochs=3",
        *QUIET,
    ]
    with initialize_config_module("lightning_template.conf", version_base="1.3"):
        metrics = train(compose("train", overrides))
    return Run(request.param, run_dir, metrics)


def test_the_checkpoint_keeps_the_image_shape_and_class_names_and_each_class_is_tested(run: Run) -> None:
    checkpoint = torch.load(run.best, weights_only=True)
    spec = checkpoint["hyper_parameters"]["spec"]
    assert spec == {
        "kind": "image",
        "shape": [3, 48, 48],
        "dtype": "uint8",
        "classes": CLASSES,
        "features": None,
    }
    data = checkpoint["datamodule_hyper_parameters"]
    assert data["_target_"] == "lightning_template.data.image_folder.ImageFolderDataModule"
    assert {"test/acc", "test/loss", "val/acc_best", *(f"test/class_acc/{name}" for name in CLASSES)} <= set(
        run.metrics
    )
    assert run.metrics["test/acc"] > 0.6  # three epochs learn the colours (chance: 1/3)
    # 4 test images a class: the mean of the classes' accuracies is the overall one.
    per_class = [run.metrics[f"test/class_acc/{name}"] for name in CLASSES]
    assert sum(per_class) / 3 == pytest.approx(run.metrics["test/acc"], abs=1e-6)


def test_tensorboard_has_the_image_grids_and_a_test_accuracy_per_class(run: Run) -> None:
    events = EventAccumulator(str(run.dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"val/predictions", "test/mistakes", "val/confusion_matrix", "test/confusion_matrix"} <= set(
        tags["images"]
    )
    assert {"test/acc", *(f"test/class_acc/{name}" for name in CLASSES)} <= set(tags["scalars"])
    for name in CLASSES:
        assert events.Scalars(f"test/class_acc/{name}")[-1].value == pytest.approx(
            run.metrics[f"test/class_acc/{name}"]
        )


def test_eval_with_only_the_checkpoint_reproduces_the_test_accuracy(
    make_cfg: Callable[..., DictConfig], run: Run
) -> None:
    evaluated = evaluate(make_cfg("eval", [f"ckpt_path={run.best}", "logger=none"]))
    for key in ("test/acc", *(f"test/class_acc/{name}" for name in CLASSES)):
        assert evaluated[key] == pytest.approx(run.metrics[key], abs=1e-7)


def test_predict_names_the_classes_and_agrees_with_the_test_accuracy(
    make_cfg: Callable[..., DictConfig], run: Run, folder: Path, tmp_path: Path
) -> None:
    # A folder's own files only: the class subfolders of test/ are reached with a glob.
    csv_path = predict(make_cfg("predict", [f"ckpt_path={run.best}", f"inputs='{folder}/test/*/*.png'"]))
    assert csv_path == tmp_path / "predictions.csv"
    with csv_path.open() as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["path", "class", *(f"prob_{name}" for name in CLASSES), "error"]
    assert len(rows) == 12 and {row["class"] for row in rows} <= set(CLASSES)
    assert all(row["error"] == "" for row in rows)
    for row in rows:
        assert sum(float(row[f"prob_{name}"]) for name in CLASSES) == pytest.approx(1, abs=1e-4)
    # The same pixels as the test set: the share of files predicted as their folder's class is test/acc.
    right = sum(row["class"] == Path(row["path"]).parent.name for row in rows)
    assert right / len(rows) == pytest.approx(run.metrics["test/acc"], abs=1e-6)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")  # what deployments still load
def test_an_image_folder_model_exports_to_onnx_and_torchscript(
    make_cfg: Callable[..., DictConfig], run: Run, folder: Path, tmp_path: Path
) -> None:
    import onnxruntime

    model = load_checkpoint(run.best).eval()
    datamodule = ImageFolderDataModule(root=folder, image_size=[48, 48], val_split=4, cache_dir=tmp_path)
    datamodule.setup("test")
    images = examples(datamodule.data_test)[0]
    with torch.inference_mode():
        expected = model(images).softmax(dim=1)

    path = export(make_cfg("export", [f"ckpt_path={run.best}", "format=onnx"]))
    assert path == tmp_path / "model.onnx"
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert (torch.from_numpy(session.run(None, {"images": images.numpy()})[0]) - expected).abs().max() < 1e-5

    path = export(make_cfg("export", [f"ckpt_path={run.best}", "format=torchscript"]))
    assert path == tmp_path / "model.torchscript.pt"
    scripted = torch.jit.load(path)
    with torch.inference_mode():
        assert (scripted(images) - expected).abs().max() < 1e-5


def test_without_a_test_folder_a_seeded_test_split_is_drawn(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "pets", {"train": 8})

    def split(seed: int) -> ImageFolderDataModule:
        datamodule = ImageFolderDataModule(
            root=root, image_size=[16, 16], test_split=0.25, val_split=0.2, seed=seed, cache_dir=tmp_path
        )
        datamodule.setup("fit")
        return datamodule

    first, again, other = split(seed=1), split(seed=1), split(seed=2)
    assert first.spec.classes == CLASSES and first.spec.shape == [3, 16, 16]
    parts = [examples(first.data_train), examples(first.data_val), examples(first.data_test)]
    # 24 images: a quarter (6) for testing, then a fifth of the 18 others (round(3.6) = 4) for validation.
    assert [len(labels) for _, labels in parts] == [14, 4, 6]
    assert all(images.dtype == torch.uint8 and images.shape[1:] == (3, 16, 16) for images, _ in parts)
    everything = torch.cat([images for images, _ in parts])
    assert len(everything.flatten(1).unique(dim=0)) == 24  # each image in exactly one part
    assert torch.cat([labels for _, labels in parts]).bincount().tolist() == [8, 8, 8]
    for a, b in zip(
        (first.data_train, first.data_val, first.data_test),
        (again.data_train, again.data_val, again.data_test),
        strict=True,
    ):
        assert all(torch.equal(x, y) for x, y in zip(examples(a), examples(b), strict=True))
    # Another seed, another split.
    assert not torch.equal(examples(first.data_test)[0], examples(other.data_test)[0])


def test_grayscale_images_give_one_channel(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "pets", {"train": 5, "test": 2}, gray=True)
    datamodule = ImageFolderDataModule(root=root, image_size=[20, 24], val_split=3, cache_dir=tmp_path)
    datamodule.setup("fit")
    assert datamodule.spec.shape == [1, 20, 24]
    assert examples(datamodule.data_test)[0].shape == (6, 1, 20, 24)


def load(root: Path) -> None:
    ImageFolderDataModule(root=root, image_size=[16, 16], val_split=2, cache_dir=root / "cache").setup("fit")


def test_a_file_that_is_no_image_is_named(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "pets", {"train": 3})
    broken = root / "train" / "dog" / "broken.png"
    broken.write_text("not an image\n")
    with pytest.raises(UserError, match=rf"{re.escape(str(broken))} could not be read as an image") as error:
        load(root)
    assert "cannot identify image file" in str(error.value)


def test_an_empty_class_folder_is_named(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "pets", {"train": 3})
    (root / "train" / "owl").mkdir()
    with pytest.raises(UserError, match=r"Found no valid file for the classes owl") as error:
        load(root)
    assert f"data.root={root}" in str(error.value) and str(root / "train") in str(error.value)


@pytest.mark.parametrize(
    ("odd_one", "named", "channels"),
    [
        ("train/dog/gray.png", "train/dog/gray.png", 1),
        ("test/dog/gray.png", "test/dog/gray.png", 1),
        ("train/cat/00.png", "train/cat/01.png", 3),  # read first: its one channel is the rule
    ],
)
def test_a_grayscale_image_among_colour_ones_is_named(
    tmp_path: Path, odd_one: str, named: str, channels: int
) -> None:
    root = write_folder(tmp_path / "pets", {"train": 3, "test": 2})
    Image.fromarray(pattern("dog", np.random.default_rng(0))).convert("L").save(root / odd_one)
    with pytest.raises(
        UserError,
        match=rf"{re.escape(str(root / named))} could not be read as an image \(it has {channels} channel\(s\) where the first training image has",
    ):
        load(root)


def test_a_bad_image_size_and_test_classes_unlike_train_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"data\.image_size must be \[height, width\], got \[32\]"):
        ImageFolderDataModule(root=tmp_path, image_size=[32])
    root = write_folder(tmp_path / "pets", {"train": 3, "test": 2})
    (root / "test" / "fox").rename(root / "test" / "wolf")
    with pytest.raises(UserError, match=r"test/ needs the class folders of train/, \['cat', 'dog', 'fox'\]"):
        ImageFolderDataModule(root=root, image_size=[16, 16], cache_dir=tmp_path).setup("fit")


@pytest.mark.slow
def test_the_readme_commands_train_evaluate_and_predict_on_an_image_folder(
    folder: Path, tmp_path: Path
) -> None:
    logs = f"paths.log_dir={tmp_path / 'logs'}"
    args = ["data=image_folder", f"data.root={folder}", "model=cnn", "data.image_size=[48,48]", logs]
    trained = run_cli("lightning_template.train", args, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert all(f"test/class_acc/{name}" in trained.stdout for name in CLASSES)
    best = next(
        line.split(": ", 1)[1] for line in trained.stdout.splitlines() if line.startswith("Best checkpoint")
    )
    evaluated = run_cli("lightning_template.eval", [f"ckpt_path={best}", logs], cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    test_acc = [
        line.split()[1]
        for line in trained.stdout.splitlines() + evaluated.stdout.splitlines()
        if line.startswith("  test/acc ")
    ]
    assert len(test_acc) == 2 and test_acc[0] == test_acc[1]  # eval reproduces the run's test accuracy
    predicted = run_cli(
        "lightning_template.predict", [f"ckpt_path={best}", f"inputs={folder / 'test'}", logs], cwd=tmp_path
    )
    assert predicted.returncode == 0, predicted.stderr
    written = next((tmp_path / "logs" / "predict" / "runs").glob("*/predictions.csv"))
    rows = list(csv.DictReader(written.read_text().splitlines()))
    assert len(rows) == 12 and {row["class"] for row in rows} <= set(CLASSES)


def test_images_are_decoded_once_into_a_cache_that_a_changed_file_replaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, cache = write_folder(tmp_path / "pets", {"train": 4, "test": 2}), tmp_path / "cache"
    first = ImageFolderDataModule(root=root, image_size=[16, 16], val_split=2, cache_dir=cache)
    first.prepare_data()  # as Lightning does, once per machine: decodes
    first.setup("fit")
    files = sorted(path.name for path in cache.glob("*.npy"))
    assert len(files) == 2 and files[0].startswith("pets-test-") and files[1].startswith("pets-train-")

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(ImageFolderDataModule, "decode", no_decoding)
    again = ImageFolderDataModule(root=root, image_size=[16, 16], val_split=2, cache_dir=cache)
    again.setup("fit")  # reads the cache only, memory-mapped
    assert all(
        torch.equal(x, y) for x, y in zip(examples(first.data_train), examples(again.data_train), strict=True)
    )
    monkeypatch.undo()
    Image.fromarray(pattern("fox", np.random.default_rng(9))).save(root / "train" / "cat" / "00.png")
    changed = ImageFolderDataModule(root=root, image_size=[16, 16], val_split=2, cache_dir=cache)
    changed.setup("fit")
    assert len(list(cache.glob("pets-train-*.npy"))) == 2  # a new file for the new contents
    assert not torch.equal(changed.data_train.inputs, first.data_train.inputs)


def test_16_bit_images_keep_their_range(tmp_path: Path) -> None:
    gradient = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 to 65,472
    Image.fromarray(gradient).save(tmp_path / "deep.png")
    image = read_image(tmp_path / "deep.png", (32, 32))
    assert image.shape == (1, 32, 32) and int(image.max()) == 65472 // 257
    assert float(image.float().mean()) == pytest.approx(gradient.mean() / 257, abs=1)  # not clipped white


def test_class_names_in_any_script_train_and_are_listed_where_the_font_cannot_draw_them(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    root = write_folder(tmp_path / "birds", {"train": 4})
    (root / "train" / "fox").rename(root / "train" / "鳥")
    metrics = train(
        make_cfg("train", ["data=image_folder", f"data.root={root}", "data.image_size=[16,16]", *QUIET])
    )
    assert "test/class_acc/鳥" in metrics
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    legends = [event.tensor_proto.string_val[0].decode() for event in events.Tensors("classes/text_summary")]
    assert legends and all("2: 鳥" in legend for legend in legends)


def test_a_missing_root_is_one_paragraph(tmp_path: Path) -> None:
    result = run_cli("lightning_template.train", ["data=image_folder"], cwd=tmp_path)
    assert result.returncode == 2
    error = "Error: data.root is required: pass data.root=<value> on the command line.\n"
    assert result.stderr.endswith(f"\n{error}")  # after Lightning's "Seed set to 42"


def test_resuming_on_other_data_is_refused_naming_what_differs(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    root = write_folder(tmp_path / "pets", {"train": 4})
    data = ["data=image_folder", f"data.root={root}", "data.image_size=[16,16]", *QUIET]
    train(make_cfg("train", [*data, "trainer.max_epochs=1"]))
    (root / "train" / "fox").rename(root / "train" / "owl")
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    with pytest.raises(
        UserError,
        match=r"The checkpoint has classes \['cat', 'dog', 'fox'\] where this data has \['cat', 'dog', 'owl'\]",
    ):
        train(make_cfg("train", [*data, "trainer.max_epochs=2", f"ckpt_path={last}"]))
    after = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    assert {path: after[path] for path in before} == before  # nothing lost or changed
    # Lightning opens the loggers before the data is set up: an empty TensorBoard file is all that is new.
    assert all(
        path.parent.name == "tensorboard" and len(after[path]) < 100 for path in set(after) - set(before)
    )


DECODE_AT_ONCE = """
import sys, time
from pathlib import Path
from lightning_template.data.image_folder import ImageFolderDataModule

root, cache, go = map(Path, sys.argv[1:])
while not go.exists():
    time.sleep(0.01)
datamodule = ImageFolderDataModule(root=root, image_size=[16, 16], val_split=2, cache_dir=cache)
datamodule.prepare_data()
datamodule.setup("fit")
print(int(datamodule.data_train.inputs.sum()))
"""


def test_runs_started_at_once_decode_the_folder_once(tmp_path: Path) -> None:
    root, cache, go = write_folder(tmp_path / "pets", {"train": 6}), tmp_path / "cache", tmp_path / "go"
    command = [sys.executable, "-c", DECODE_AT_ONCE, str(root), str(cache), str(go)]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    go.touch()
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0] and len(set(outputs)) == 1
    assert len(list(cache.glob("*.npy"))) == 1 and not list(cache.glob("*.partial"))
