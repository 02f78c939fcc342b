"""The datamodule: splits, standardization fitted on the training split, batches, shards, other datasets."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import DictConfig

from lightning_template.data.augment import RandomWarp
from lightning_template.data.datamodule import fit_standardization, random_split
from lightning_template.data.mnist import MNISTDataModule
from lightning_template.errors import UserError
from lightning_template.eval import evaluate
from lightning_template.train import train

from tests.conftest import FAST, REPO, examples, read_mnist, run_cli


@pytest.fixture(scope="module")
def datamodule(mnist_dir: Path) -> MNISTDataModule:
    dm = MNISTDataModule(data_dir=mnist_dir, val_split=5000, seed=7)
    dm.setup("fit")
    return dm


def test_val_split_is_a_fraction_or_a_count() -> None:
    indices = torch.arange(60_000)
    assert len(random_split(indices, 0.1, "data.val_split", seed=0)[1]) == 6000
    assert len(random_split(indices, 5000, "data.val_split", seed=0)[1]) == 5000
    for bad in (0.0, 1.0, 1.5, 0, 60_000, -3, True, "10%"):
        with pytest.raises(UserError, match=r"data\.val_split"):
            random_split(indices, bad, "data.val_split", seed=0)  # type: ignore[arg-type]


def test_splits_are_disjoint_cover_the_training_set_and_follow_the_seed(
    datamodule: MNISTDataModule, mnist_dir: Path
) -> None:
    train_set, val_set = examples(datamodule.data_train), examples(datamodule.data_val)
    assert len(train_set[0]) == 55_000 and len(val_set[0]) == 5000
    assert len(datamodule.data_test) == 10_000  # the official test set, untouched
    # Together the two splits hold every training image exactly once: compare label counts and pixel sums.
    images, labels = read_mnist(datamodule.data_dir)[0]
    assert torch.equal(torch.bincount(torch.cat([train_set[1], val_set[1]])), torch.bincount(labels))
    total = train_set[0].sum(dtype=torch.int64) + val_set[0].sum(dtype=torch.int64)
    assert total == images.sum(dtype=torch.int64)
    same = MNISTDataModule(data_dir=mnist_dir, seed=7)
    same.setup("fit")
    other = MNISTDataModule(data_dir=mnist_dir, seed=8)
    other.setup("fit")
    assert torch.equal(examples(same.data_val)[0], val_set[0])
    assert not torch.equal(examples(other.data_val)[0], val_set[0])


def test_standardization_is_fitted_on_the_training_split_only(datamodule: MNISTDataModule) -> None:
    pixels, spec = examples(datamodule.data_train)[0].double(), datamodule.spec
    assert spec.mean is not None and spec.std is not None and spec.mean.shape == (1, 28, 28)
    assert float(spec.mean[0, 0, 0]) == pytest.approx(float(pixels.mean()), rel=1e-6)
    assert float(spec.std[0, 0, 0]) == pytest.approx(float(pixels.std(correction=0)), rel=1e-6)


def test_per_pixel_standardization_is_standard_scaler() -> None:
    images = torch.randint(0, 256, (500, 1, 4, 4), dtype=torch.uint8)
    images[:, :, 0, 0] = 9  # a constant pixel: centred, not scaled
    every = torch.arange(500)
    mean, std = fit_standardization(images, every, "per_pixel")
    flat = images.reshape(500, -1).numpy().astype(np.float64)
    expected_std = flat.std(axis=0)
    expected_std[expected_std == 0] = 1.0
    np.testing.assert_allclose(mean.reshape(-1).numpy(), flat.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(std.reshape(-1).numpy(), expected_std, rtol=1e-6)
    mean, std = fit_standardization(images, every, "none")
    assert float(mean.max()) == 0.0 and float(std.min()) == 255.0


def test_batches_are_whole_uint8_tensors_in_an_order_set_by_seed_and_epoch(
    datamodule: MNISTDataModule,
) -> None:
    loader = datamodule.train_dataloader()
    images, labels = next(iter(loader))
    assert images.dtype == torch.uint8 and images.shape == (128, 1, 28, 28) and labels.shape == (128,)
    first = [labels for _, labels in islice(loader, 3)]
    again = [labels for _, labels in islice(loader, 3)]
    loader.sampler.set_epoch(1)  # what Lightning does at every epoch
    next_epoch = [labels for _, labels in islice(loader, 3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], next_epoch[0])


@pytest.mark.parametrize("processes", [2, 3])
def test_every_process_gets_its_shard_and_evaluation_counts_each_image_once(
    datamodule: MNISTDataModule, processes: int
) -> None:
    shards = []
    for rank in range(processes):
        datamodule.trainer = SimpleNamespace(world_size=processes, global_rank=rank)  # type: ignore[assignment]
        shards.append(list(datamodule.val_dataloader().sampler))
        train_shard = set(datamodule.train_dataloader().sampler)
        assert len(train_shard) >= 55_000 // processes
    datamodule.trainer = None
    assert sorted(i for shard in shards for i in shard) == list(range(5000))


def test_augmentation_warps_each_training_image_differently() -> None:
    images = torch.zeros(4, 1, 28, 28)
    images[:, :, 10:18, 12:16] = 255.0
    warped = RandomWarp(rotate_degrees=20, translate_px=3, scale=0.1, elastic_alpha=1.5)(images)
    assert warped.shape == images.shape and not torch.equal(warped[0], warped[1])
    assert not RandomWarp().active  # all zero: training batches pass through untouched
    with pytest.raises(UserError, match=r"data\.augment"):
        RandomWarp(scale=1.5)


def test_bad_data_settings_name_the_key(mnist_dir: Path) -> None:
    for kwargs, key in (
        ({"batch_size": 0}, "data.batch_size"),
        ({"normalize": "minmax"}, "data.normalize"),
        ({"dataset": "cifar"}, "data.dataset"),
    ):
        with pytest.raises(UserError, match=key.replace(".", r"\.")):
            MNISTDataModule(data_dir=mnist_dir, **kwargs)


def write_idx(path: Path, data: torch.Tensor) -> None:
    """An IDX file as the MNIST family stores them: magic, dimensions, then the bytes."""
    header = bytes([0, 0, 0x08, data.dim()]) + b"".join(d.to_bytes(4, "big") for d in data.shape)
    path.write_bytes(header + data.numpy().tobytes())


def write_fashion_mnist(data_dir: Path) -> Path:
    """Small random Fashion-MNIST files (600 training, 100 test images) where torchvision looks for them."""
    raw = data_dir / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for split, count in (("train", 600), ("t10k", 100)):
        write_idx(
            raw / f"{split}-images-idx3-ubyte", torch.randint(0, 256, (count, 28, 28), dtype=torch.uint8)
        )
        write_idx(raw / f"{split}-labels-idx1-ubyte", torch.arange(count, dtype=torch.uint8) % 10)
    return data_dir


def test_fashion_mnist_files_train_end_to_end(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    write_fashion_mnist(tmp_path / "fashion")
    cfg = make_cfg(
        "train", [*FAST, "data=fashion_mnist", "data.val_split=0.1", f"paths.data_dir={tmp_path / 'fashion'}"]
    )
    metrics = train(cfg)  # eval takes the data config, Fashion-MNIST, from the checkpoint
    best = next((tmp_path / "checkpoints").glob("epoch_*.ckpt"))
    evaluated = evaluate(
        make_cfg("eval", [f"ckpt_path={best}", "logger=none", "++trainer.limit_test_batches=2"])
    )
    assert evaluated["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-7)


def test_missing_files_offline_say_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="KMNIST/raw") as error:
        MNISTDataModule(data_dir=tmp_path, dataset="kmnist").setup("fit")
    assert "paths.data_dir" in str(error.value)


def test_k_fold_validation_sets_are_disjoint_cover_the_training_set_and_follow_the_seed(
    mnist_dir: Path,
) -> None:
    seen: set[bytes] = set()
    for fold in range(5):
        datamodule = MNISTDataModule(data_dir=mnist_dir, folds=5, fold=fold, seed=3)
        datamodule.setup("fit")
        val_images, train_images = examples(datamodule.data_val)[0], examples(datamodule.data_train)[0]
        assert len(val_images) == 12_000 and len(train_images) == 48_000
        assert len(datamodule.data_test) == 10_000  # the official test set, untouched
        folded = {image.numpy().tobytes() for image in val_images}
        assert not folded & seen  # disjoint from the other folds' (MNIST's images are distinct)
        seen |= folded
    assert len(seen) == len({image.numpy().tobytes() for image in read_mnist(mnist_dir)[0][0]})  # each once
    again = MNISTDataModule(data_dir=mnist_dir, folds=5, fold=4, seed=3)
    again.setup("fit")
    assert torch.equal(examples(again.data_val)[0], val_images)
    for folds, fold in ((5, 5), (None, 3), (0, 0)):  # never silently no k-fold: data.fold alone, data.folds=0
        with pytest.raises(UserError, match=rf"data\.folds must be >= 2 .* got {folds}, {fold}\."):
            MNISTDataModule(data_dir=mnist_dir, folds=folds, fold=fold)
    with pytest.raises(UserError, match=r"data\.folds=60001 is more than the 60000 training examples"):
        MNISTDataModule(data_dir=mnist_dir, folds=60001).setup("fit")  # a fold would be empty


def fresh_data(data_dir: Path) -> Path:
    """A data_dir holding only the repository's four MNIST .gz files, as on a fresh clone."""
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for archive in (REPO / "data" / "MNIST" / "raw").glob("*.gz"):
        shutil.copy(archive, raw)
    return data_dir


def listing(data_dir: Path) -> list[str]:
    return sorted(path.name for path in (data_dir / "MNIST" / "raw").iterdir())


# Waits for `go` before loading, so that the processes, started one after the other, load at the same moment.
LOAD_AT_ONCE = """
import sys, time
from pathlib import Path
from lightning_template.data.mnist import MNISTDataModule

data_dir, ready, go = map(Path, sys.argv[1:])
ready.touch()
deadline = time.monotonic() + 120
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.01)
datamodule = MNISTDataModule(data_dir=data_dir)
datamodule.prepare_data()
train, test = (part.inputs for part in datamodule.load()[:2])
print(tuple(train.shape), tuple(test.shape), int(train.sum()), int(test.sum()))
"""


@pytest.mark.slow
def test_processes_started_at_once_on_a_fresh_clone_all_read_the_data(tmp_path: Path) -> None:
    data_dir = fresh_data(tmp_path / "data")
    archives, go, count = listing(data_dir), tmp_path / "go", 4
    command = [sys.executable, "-c", LOAD_AT_ONCE, str(data_dir)]
    processes = [
        subprocess.Popen([*command, str(tmp_path / f"ready{n}"), str(go)], stdout=subprocess.PIPE, text=True)
        for n in range(count)
    ]
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("ready*"))) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        go.touch()
        outputs = [process.communicate(timeout=120)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()
    assert [process.returncode for process in processes] == [0] * count
    assert len(set(outputs)) == 1 and outputs[0].startswith("(60000, 1, 28, 28) (10000, 1, 28, 28)")
    unpacked = [name.removesuffix(".gz") for name in archives]
    assert listing(data_dir) == sorted([*archives, *unpacked, "unpack.lock"])  # and no partial file


@pytest.mark.slow
def test_ddp_ranks_started_at_once_on_a_fresh_clone_train(tmp_path: Path) -> None:
    """torchrun starts both ranks at once, as srun does; each one's train() sets up the data."""
    data_dir = fresh_data(tmp_path / "data")
    args = ["--standalone", "--nproc-per-node=2", "-m", "lightning_template.train", "trainer=ddp_cpu"]
    args += ["debug=fast", "print_config=false", f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path}"]
    result = run_cli("torch.distributed.run", args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stdout + result.stderr
    assert not list(data_dir.rglob("*.partial"))


def test_a_file_left_partial_by_a_killed_run_is_unpacked_again(tmp_path: Path) -> None:
    data_dir = fresh_data(tmp_path)
    raw = data_dir / "MNIST" / "raw"
    (raw / "train-images-idx3-ubyte").write_bytes(b"")  # a kill right after opening it (older versions)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0x27, 0x10, 7, 2]))  # or later
    (raw / "t10k-images-idx3-ubyte.partial").write_bytes(b"\0" * 99)  # a kill during unpacking
    (train, _), (test, test_labels) = read_mnist(data_dir)
    assert train.shape == (60_000, 1, 28, 28) and test.shape == (10_000, 1, 28, 28)
    assert len(test_labels) == 10_000
    assert not list(raw.glob("*.partial"))


def test_damaged_files_get_a_message_with_the_fix(tmp_path: Path) -> None:
    data_dir = fresh_data(tmp_path / "gz")
    archive = data_dir / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    archive.write_bytes(archive.read_bytes()[:1000])  # a copy cut short
    with pytest.raises(
        UserError, match=r"train-labels-idx1-ubyte\.gz is damaged .*git checkout -- data/MNIST"
    ):
        read_mnist(data_dir)
    assert not list(archive.parent.glob("*.partial"))
    # Unpacked files without their .gz (copied from elsewhere): the .gz files would be unpacked again.
    fashion = write_fashion_mnist(tmp_path / "fashion")
    (fashion / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"")
    with pytest.raises(
        UserError, match=r"FashionMNIST/raw could not be read .* Put the four \.gz files there"
    ):
        read_mnist(fashion, "fashion_mnist")
