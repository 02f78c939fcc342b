"""The MNIST family by config: data=fashion_mnist and data=kmnist, on small fabricated IDX files."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from lightning_template.data import mnist
from lightning_template.data.idx_files import DataFileError
from lightning_template.data.mnist import DATASETS, IdxDataset, MNISTDataModule
from lightning_template.train import train

from tests.conftest import write_idx

OTHER_DATASETS = ["fashion_mnist", "kmnist"]
TRAIN, TEST = 300, 100


def fabricate(data_dir: Path, name: str, train_size: int = TRAIN, test_size: int = TEST) -> dict[str, str]:
    """Write the four .gz files of `name` with small random contents; return their MD5 sums."""
    raw = data_dir / DATASETS[name].folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    contents = {
        "train-images-idx3-ubyte": torch.randint(0, 256, (train_size, 28, 28), generator=generator),
        "train-labels-idx1-ubyte": torch.arange(train_size) % 10,
        "t10k-images-idx3-ubyte": torch.randint(0, 256, (test_size, 28, 28), generator=generator),
        "t10k-labels-idx1-ubyte": (torch.arange(test_size) * 7) % 10,
    }
    sums = {}
    for file_name, data in contents.items():
        archive = write_idx(raw / file_name, data.to(torch.uint8), compress=True)
        sums[file_name] = hashlib.md5(archive.read_bytes()).hexdigest()
    return sums


@pytest.fixture
def trust_fabricated(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, dict[str, str]], None]:
    """Swap a dataset's published .gz sums and sizes for those of the fabricated files."""

    def _trust(name: str, sums: dict[str, str]) -> None:
        spec = dataclasses.replace(DATASETS[name], archive_md5s=sums, train_size=TRAIN, test_size=TEST)
        monkeypatch.setitem(DATASETS, name, spec)

    return _trust


@pytest.mark.parametrize(
    ("option", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST"), ("kmnist", "KMNIST")]
)
def test_data_option_picks_the_dataset_and_its_folder(
    make_cfg: Callable[..., DictConfig], option: str, folder: str
) -> None:
    for config_name in ("train", "eval"):
        cfg = make_cfg(config_name, [f"data={option}"])
        datamodule = instantiate(cfg.data)
        assert datamodule.dataset is DATASETS[option]
        assert datamodule.raw_dir == Path(cfg.paths.data_dir) / folder / "raw"
        assert datamodule.batch_size == 128 and datamodule.val_size == 5000  # the rest is mnist.yaml's


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"data.dataset='cifar10' .* \['fashion_mnist', 'kmnist', 'mnist'\]"):
        MNISTDataModule(dataset="cifar10")


def test_published_sums_are_torchvisions() -> None:
    import torchvision.datasets

    for name in OTHER_DATASETS:
        spec = DATASETS[name]
        assert spec.torchvision_class is not None
        resources = getattr(torchvision.datasets, spec.torchvision_class).resources
        assert {f"{file}.gz": md5 for file, md5 in spec.archive_md5s.items()} == dict(resources)


@pytest.mark.parametrize("name", OTHER_DATASETS)
def test_fabricated_archives_are_verified_unpacked_and_split(
    tmp_path: Path, name: str, trust_fabricated: Callable[[str, dict[str, str]], None]
) -> None:
    trust_fabricated(name, fabricate(tmp_path, name))
    datamodule = MNISTDataModule(data_dir=tmp_path, dataset=name, val_split=50, download=False)
    datamodule.prepare_data()
    datamodule.setup("fit")
    raw = tmp_path / DATASETS[name].folder / "raw"
    assert all((raw / file).is_file() for file in mnist.IDX_NAMES)
    assert datamodule.data_train is not None and datamodule.data_val is not None
    assert datamodule.data_test is not None
    assert (len(datamodule.data_train), len(datamodule.data_val), len(datamodule.data_test)) == (
        250,
        50,
        TEST,
    )
    assert datamodule.data_test.labels.tolist() == ((torch.arange(TEST) * 7) % 10).tolist()
    assert datamodule.data_train.images.shape[1:] == (1, 28, 28)


@pytest.mark.parametrize("name", OTHER_DATASETS)
def test_archive_that_is_not_the_published_one_is_refused(tmp_path: Path, name: str) -> None:
    fabricate(tmp_path, name)  # real specs: the fabricated .gz files cannot match torchvision's sums
    expected = DATASETS[name].archive_md5s["train-images-idx3-ubyte"]
    with pytest.raises(DataFileError, match=rf"train-images-idx3-ubyte.gz is corrupt .* expected {expected}"):
        MNISTDataModule(data_dir=tmp_path, dataset=name, download=False).prepare_data()
    assert not (tmp_path / DATASETS[name].folder / "raw" / "train-images-idx3-ubyte").exists()


def test_wrong_number_of_images_is_named(
    tmp_path: Path, trust_fabricated: Callable[[str, dict[str, str]], None]
) -> None:
    trust_fabricated("kmnist", fabricate(tmp_path, "kmnist", test_size=TEST - 1))
    with pytest.raises(DataFileError, match=rf"Expected {TEST} test images and labels of Kuzushiji-MNIST"):
        MNISTDataModule(data_dir=tmp_path, dataset="kmnist", val_split=50, download=False).setup("fit")


@pytest.mark.parametrize(
    ("name", "title", "folder"),
    [("fashion_mnist", "Fashion-MNIST", "FashionMNIST"), ("kmnist", "Kuzushiji-MNIST", "KMNIST")],
)
def test_missing_files_offline_say_where_to_put_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, title: str, folder: str
) -> None:
    put_here = (
        rf"Put the four {title} files \(train-images-idx3-ubyte.gz, .*\) in {tmp_path / folder / 'raw'}"
    )
    with pytest.raises(DataFileError, match=rf"data.download=false. {put_here}"):
        MNISTDataModule(data_dir=tmp_path, dataset=name, download=False).prepare_data()

    import torchvision.datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise RuntimeError(
            "Error downloading train-images-idx3-ubyte.gz:\nTried http://example.org/, got:\n"
            "<urlopen error [Errno -2] Name or service not known>\n"
        )

    monkeypatch.setattr(torchvision.datasets, DATASETS[name].torchvision_class or "", offline)
    with pytest.raises(
        DataFileError, match=rf"Downloading {title} into .* failed .*offline. {put_here}"
    ) as error:
        MNISTDataModule(data_dir=tmp_path, dataset=name, download=True).prepare_data()
    assert "\n" not in str(error.value)  # one paragraph, though torchvision's reason spans lines


def test_fashion_mnist_trains_and_tests_end_to_end(
    make_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    trust_fabricated: Callable[[str, dict[str, str]], None],
) -> None:
    data_dir = tmp_path / "fashion"
    trust_fabricated("fashion_mnist", fabricate(data_dir, "fashion_mnist"))
    cfg = make_cfg(
        "train",
        ["debug=fast", "data=fashion_mnist", f"data.data_dir={data_dir}", "data.val_split=50", "logger=none"],
    )
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    mean = checkpoint["MNISTDataModule"]["standardizer"]["mean"]
    # Fitted on the fabricated uniform noise (mean ~127.5), not on MNIST (mean ~33).
    assert 110 < float(mean) < 145


def test_a_new_entry_in_datasets_is_all_an_idx_dataset_needs(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's "Add your own data": one DATASETS entry, then data.dataset=<name> trains on it."""
    entry = IdxDataset(
        title="My digits", folder="MyDigits", source="my lab", train_size=TRAIN, test_size=TEST
    )
    monkeypatch.setitem(DATASETS, "my_digits", entry)
    data_dir = tmp_path / "mine"
    fabricate(data_dir, "my_digits")  # no sums published: the IDX headers are checked against the sizes
    cfg = make_cfg(
        "train",
        [
            "debug=fast",
            "++data.dataset=my_digits",  # what conf/data/my_digits.yaml would set
            f"data.data_dir={data_dir}",
            "data.val_split=50",
            "logger=none",
        ],
    )
    assert 0.0 <= train(cfg)["test/acc"] <= 1.0
    assert (data_dir / "MyDigits" / "raw" / "train-images-idx3-ubyte").is_file()
    with pytest.raises(DataFileError, match=r"My digits files .* data.download=false.* \(my lab\)"):
        MNISTDataModule(
            data_dir=tmp_path / "empty", dataset="my_digits", val_split=50, download=False
        ).prepare_data()
    with pytest.raises(DataFileError, match=r"torchvision cannot download it"):
        MNISTDataModule(data_dir=tmp_path / "empty", dataset="my_digits", val_split=50).prepare_data()
