"""MNISTDataModule and the IDX files behind it: splits, standardization, batches, broken files."""

from __future__ import annotations

import gzip
import hashlib
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from lightning_template.data.batches import RandomDistortion, Standardizer, TensorBatchDataset, keep_batch
from lightning_template.data.idx_files import DataFileError, ensure_idx_files, read_idx
from lightning_template.data.mnist import MNIST_FILES, MNISTDataModule, resolve_val_split

from tests.conftest import write_idx


@pytest.fixture(scope="module")
def datamodule(mnist_dir: Path) -> MNISTDataModule:
    dm = MNISTDataModule(data_dir=mnist_dir, download=False)
    dm.setup("fit")
    return dm


# --- validation split ---------------------------------------------------------------------------


def test_val_split_accepts_a_fraction_or_a_count() -> None:
    assert resolve_val_split(0.1) == 6000
    assert resolve_val_split(5000) == 5000


@pytest.mark.parametrize("bad", [0.0, 1.0, 1.5, -0.2, 0, 60_000, -5, True, "10%"])
def test_val_split_rejects_out_of_range(bad: object) -> None:
    with pytest.raises(ValueError, match="val_split"):
        resolve_val_split(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"normalize": "minmax"}, "normalize"),
        ({"eval_batch_size": -1}, "eval_batch_size"),
        (
            {"augment": {"rotate_degrees": 200}},
            r"data\.augment\.rotate_degrees must be in \[0, 180\], got 200",
        ),
        ({"augment": {"translate_px": -1}}, r"data\.augment\.translate_px must be >= 0, got -1"),
        ({"augment": {"scale": 1.0}}, r"data\.augment\.scale must be in \[0, 1\), got 1\.0"),
        ({"augment": {"elastic_alpha": -2}}, r"data\.augment\.elastic_alpha must be >= 0 .* got -2"),
        (
            {"on_device": True, "num_workers": 2},
            r"data\.on_device=true .* data\.num_workers must be 0, got 2",
        ),
    ],
)
def test_datamodule_rejects_bad_arguments(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        MNISTDataModule(**kwargs)


def test_splits_are_disjoint_cover_train_and_follow_the_seed(
    datamodule: MNISTDataModule, mnist_dir: Path
) -> None:
    train, val = datamodule.train_indices, datamodule.val_indices
    assert train is not None and val is not None
    assert len(val) == 5000 and len(train) == 55_000
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(60_000))
    assert len(datamodule.data_test) == 10_000  # type: ignore[arg-type]

    same = MNISTDataModule(data_dir=mnist_dir, seed=42, download=False)
    same.setup("fit")
    assert torch.equal(same.val_indices, val)  # type: ignore[arg-type]
    other = MNISTDataModule(data_dir=mnist_dir, seed=7, download=False)
    other.setup("fit")
    assert not torch.equal(other.val_indices, val)  # type: ignore[arg-type]


def test_test_set_is_the_official_one(datamodule: MNISTDataModule, mnist_dir: Path) -> None:
    official = read_idx(mnist_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte")
    assert torch.equal(datamodule.data_test.images.squeeze(1), official)  # type: ignore[union-attr]


def test_global_statistics_come_from_the_training_split_only(datamodule: MNISTDataModule) -> None:
    train = datamodule.data_train.images.double()  # type: ignore[union-attr]
    everything = torch.cat([train, datamodule.data_val.images.double()])  # type: ignore[union-attr]
    stats = datamodule.standardizer
    assert stats.mean is not None and stats.std is not None
    assert stats.mean.item() == pytest.approx(train.mean().item(), rel=1e-6)
    assert stats.std.item() == pytest.approx(train.std(unbiased=False).item(), rel=1e-6)
    assert stats.mean.item() != pytest.approx(everything.mean().item(), rel=1e-6)


def test_per_pixel_standardization_is_standard_scaler(datamodule: MNISTDataModule) -> None:
    images = datamodule.data_train.images  # type: ignore[union-attr]
    scaler = Standardizer("per_pixel").fit(images)
    assert scaler.mean is not None and scaler.std is not None
    assert scaler.mean.shape == (1, 28, 28)
    flat = images.double().reshape(len(images), -1)
    constant = flat.std(0) == 0
    assert constant.any()  # MNIST's corner pixels are always 0
    assert torch.all(scaler.std.flatten()[constant] == 1.0)  # left unscaled, like StandardScaler
    scaled = scaler(images[:20_000]).reshape(20_000, -1)
    varying = ~constant
    assert scaled[:, varying].mean(0).abs().max() < 0.05
    assert torch.allclose(scaled.mean(), torch.tensor(0.0), atol=0.02)


def test_none_only_rescales_to_unit_range() -> None:
    images = torch.tensor([[0, 255], [51, 102]], dtype=torch.uint8)
    out = Standardizer("none").fit(images)(images)
    assert torch.allclose(out, images.float() / 255)


def test_standardizer_state_round_trips() -> None:
    images = torch.randint(0, 256, (100, 1, 28, 28), dtype=torch.uint8)
    scaler = Standardizer("per_pixel").fit(images)
    restored = Standardizer("global")
    restored.load_state_dict(scaler.state_dict())
    assert restored.mode == "per_pixel"
    assert torch.equal(restored(images), scaler(images))


def test_batches_are_uint8_on_the_host_and_standardized_float_after_transfer(
    datamodule: MNISTDataModule,
) -> None:
    loader = datamodule.train_dataloader()
    assert len(loader) == math.ceil(55_000 / 128)
    images, labels = next(iter(loader))
    assert images.dtype == torch.uint8 and images.shape == (128, 1, 28, 28)
    assert labels.dtype == torch.int64 and labels.shape == (128,)
    x, y = datamodule.on_after_batch_transfer((images, labels), 0)
    assert x.dtype == torch.float32 and x.shape == (128, 1, 28, 28)
    assert torch.equal(y, labels)
    val_images, _ = next(iter(datamodule.val_dataloader()))
    assert val_images.shape[0] == 2500


def test_shuffling_is_reproducible_and_changes_every_epoch(
    mnist_dir: Path, datamodule: MNISTDataModule
) -> None:
    first = datamodule.train_dataloader()
    epoch1 = [labels for _, labels in first]
    epoch2 = [labels for _, labels in first]
    assert not torch.equal(epoch1[0], epoch2[0])
    assert torch.equal(torch.cat(epoch1).sort().values, torch.cat(epoch2).sort().values)  # same samples

    again = MNISTDataModule(data_dir=mnist_dir, download=False)
    again.setup("fit")
    assert torch.equal(next(iter(again.train_dataloader()))[1], epoch1[0])


def test_distributed_sampler_shards_are_disjoint_and_cover(datamodule: MNISTDataModule) -> None:
    dataset = datamodule.data_train
    assert isinstance(dataset, TensorBatchDataset)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=42)
        loader = DataLoader(dataset, batch_size=128, sampler=sampler, collate_fn=keep_batch)
        seen.append(torch.cat([images.reshape(len(images), -1).sum(1) for images, _ in loader]))
        assert sum(len(labels) for _, labels in loader) == len(dataset) // 2
    # The shards hold different images (compared by pixel sums) and together every image once.
    assert len(seen[0]) + len(seen[1]) == len(dataset)
    total = dataset.images.reshape(len(dataset), -1).sum(1)
    assert torch.equal(torch.cat(seen).sort().values, total.sort().values)


@pytest.mark.parametrize("world_size", [3, 7])
def test_evaluation_shards_count_every_image_once_under_ddp(
    datamodule: MNISTDataModule, world_size: int
) -> None:
    # 5000 validation and 10000 test images do not split evenly over 3 or 7 processes; a padded
    # DistributedSampler would repeat some of them in the metrics.
    for loader_of, dataset in (
        (datamodule.val_dataloader, datamodule.data_val),
        (datamodule.test_dataloader, datamodule.data_test),
    ):
        assert isinstance(dataset, TensorBatchDataset)
        indices = []
        for rank in range(world_size):
            datamodule.trainer = SimpleNamespace(world_size=world_size, global_rank=rank, accelerator=None)  # type: ignore[assignment]
            indices += list(loader_of().sampler)
        assert sorted(indices) == list(range(len(dataset)))
    datamodule.trainer = None


def test_random_distortion_moves_pixels_differently_per_image() -> None:
    torch.manual_seed(0)
    images = torch.zeros(16, 1, 28, 28)
    images[:, :, 8:20, 12:16] = 255.0  # sixteen copies of the same stroke
    augment = RandomDistortion(rotate_degrees=15, translate_px=2, scale=0.1, elastic_alpha=2.0)
    assert augment.active
    out = augment(images)
    assert out.shape == images.shape
    assert not torch.allclose(out, images)
    flat = out.reshape(16, -1)
    assert all(not torch.allclose(flat[0], flat[i]) for i in range(1, 16))  # one draw per image
    assert out.min() >= 0
    assert out.max() <= 255 + 1e-3  # bilinear warps stay in the pixel range
    assert not RandomDistortion().active


@pytest.mark.parametrize(("training", "changed"), [(True, True), (False, False)])
def test_augmentation_applies_to_training_batches_only(
    mnist_dir: Path, training: bool, changed: bool
) -> None:
    from types import SimpleNamespace

    plain = MNISTDataModule(data_dir=mnist_dir, download=False)
    augmented = MNISTDataModule(
        data_dir=mnist_dir,
        download=False,
        augment={"rotate_degrees": 10, "translate_px": 2, "elastic_alpha": 1.5},
    )
    for dm in (plain, augmented):
        dm.setup("fit")
    batch = next(iter(plain.val_dataloader()))
    for dm in (plain, augmented):
        dm.trainer = SimpleNamespace(training=training, current_epoch=0)  # type: ignore[assignment]
    x_plain, y_plain = plain.on_after_batch_transfer(batch, 0)
    x_aug, y_aug = augmented.on_after_batch_transfer(batch, 0)
    assert x_aug.shape == x_plain.shape
    assert torch.equal(y_aug, y_plain)  # labels untouched
    assert (not torch.allclose(x_aug, x_plain)) is changed


# --- the IDX files ----------------------------------------------------------------------------


def _small_files(raw: Path) -> dict[str, str]:
    """Two tiny IDX files, gzipped, and their MD5 sums, standing in for the MNIST family's files."""
    raw.mkdir(parents=True, exist_ok=True)
    images = torch.arange(3 * 4 * 4, dtype=torch.uint8).reshape(3, 4, 4)
    labels = torch.tensor([1, 2, 3], dtype=torch.uint8)
    sums = {}
    for name, data in (("imgs-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
        archive = write_idx(raw / name, data, compress=True)
        sums[name] = hashlib.md5(gzip.decompress(archive.read_bytes())).hexdigest()
    return sums


def test_gz_files_are_unpacked_verified_and_parsed(tmp_path: Path) -> None:
    files = _small_files(tmp_path)
    ensure_idx_files(tmp_path, files)
    images = read_idx(tmp_path / "imgs-idx3-ubyte")
    assert images.shape == (3, 4, 4) and images.dtype == torch.uint8
    assert images[2, 3, 3].item() == 47
    assert read_idx(tmp_path / "labels-idx1-ubyte").tolist() == [1, 2, 3]
    assert not list(tmp_path.glob(".*.tmp"))


def test_corrupt_file_is_named_with_what_to_do(tmp_path: Path) -> None:
    files = _small_files(tmp_path)
    ensure_idx_files(tmp_path, files)
    target = tmp_path / "imgs-idx3-ubyte"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(DataFileError, match=r"imgs-idx3-ubyte is corrupt or truncated.*Delete"):
        ensure_idx_files(tmp_path, files)


def test_truncated_files_are_refused(tmp_path: Path) -> None:
    files = _small_files(tmp_path)
    archive = tmp_path / "imgs-idx3-ubyte.gz"
    archive.write_bytes(archive.read_bytes()[:20])
    with pytest.raises(DataFileError, match=r"imgs-idx3-ubyte.gz"):
        ensure_idx_files(tmp_path, files)
    assert not (tmp_path / "imgs-idx3-ubyte").exists()  # nothing half-written is left behind

    idx = write_idx(tmp_path / "short-idx1-ubyte", torch.arange(10, dtype=torch.uint8))
    idx.write_bytes(idx.read_bytes()[:-3])
    with pytest.raises(DataFileError, match="header announces"):
        read_idx(idx)


def test_missing_files_offline_say_where_to_put_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataFileError, match=r"download=false.*Put the four MNIST files"):
        MNISTDataModule(data_dir=tmp_path, download=False).prepare_data()

    import torchvision.datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no network")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataFileError, match=r"Downloading MNIST .* failed .*offline"):
        MNISTDataModule(data_dir=tmp_path, download=True).prepare_data()


def test_bundled_files_match_the_canonical_checksums(mnist_dir: Path) -> None:
    raw = mnist_dir / "MNIST" / "raw"
    for name, md5 in MNIST_FILES.items():
        assert hashlib.md5((raw / name).read_bytes()).hexdigest() == md5
