"""Your own table (data=table): train, eval, predict and export on fabricated CSV files, with commands only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_template.checkpoints import load_checkpoint
from lightning_template.data.augment import RandomWarp
from lightning_template.data.table import TableDataModule
from lightning_template.errors import UserError, user_error_in
from lightning_template.eval import evaluate
from lightning_template.export import export
from lightning_template.predict import predict
from lightning_template.train import train

from tests.conftest import examples, run_cli

pytestmark = pytest.mark.xdist_group("test_table")  # one worker trains the module's run once

CLASSES = ["benign", "malignant", "unsure"]  # named classes, sorted as text
FEATURES = [f"f{i}" for i in range(8)]
SCALES = np.logspace(-3, 4, len(FEATURES))  # from 0.001 to 10,000: useless unless standardized


def rows(count: int, seed: int, label: bool = True) -> pd.DataFrame:
    """A patient id, 8 features on very different scales that tell the class apart, a text note, the label."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, len(CLASSES), count)
    values = (rng.normal(size=(count, len(FEATURES))) + 1.5 * classes[:, None]) * SCALES
    frame = pd.DataFrame(values, columns=FEATURES)
    frame.insert(0, "patient", [f"p{seed}-{i}" for i in range(count)])
    frame["note"] = "seen"  # text: not a feature
    if label:
        frame["diagnosis"] = [CLASSES[c] for c in classes]
    return frame


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.csv, test.csv and new.csv (no label column), as a user would have them."""
    folder = tmp_path_factory.mktemp("tables")
    rows(300, seed=0).to_csv(folder / "train.csv", index=False)
    rows(90, seed=1).to_csv(folder / "test.csv", index=False)
    rows(12, seed=2, label=False).to_csv(folder / "new.csv", index=False)
    return folder


def table_data(tables: Path) -> list[str]:
    """The README's overrides for a table."""
    return [
        "data=table",
        f"data.train={tables / 'train.csv'}",
        f"data.test={tables / 'test.csv'}",
        "data.label=diagnosis",
        "data.id=patient",
    ]


class Run(NamedTuple):
    dir: Path
    metrics: dict[str, float]

    @property
    def best(self) -> Path:
        (best,) = (self.dir / "checkpoints").glob("epoch_*.ckpt")
        return best


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tables: Path) -> Run:
    run_dir = tmp_path_factory.mktemp("train")
    overrides = [
        f"paths.output_dir={run_dir}",
        f"paths.log_dir={run_dir}/logs",
        "trainer.max_epochs=8",
        "data.batch_size=16",
    ]
    overrides += ["++trainer.enable_progress_bar=false", "callbacks.progress_bar=null"]
    with initialize_config_module("lightning_template.conf", version_base="1.3"):
        metrics = train(compose("train", [*overrides, *table_data(tables)]))
    return Run(run_dir, metrics)


def test_the_checkpoint_holds_the_spec_and_the_standardization_of_the_training_split(
    run: Run, tables: Path
) -> None:
    checkpoint = torch.load(run.best, weights_only=True)
    spec = checkpoint["hyper_parameters"]["spec"]
    assert spec == {
        "kind": "table",
        "shape": [8],
        "dtype": "float32",
        "classes": CLASSES,
        "features": FEATURES,
    }
    assert checkpoint["datamodule_hyper_parameters"]["label"] == "diagnosis"
    datamodule = TableDataModule(
        train=tables / "train.csv", test=tables / "test.csv", label="diagnosis", id="patient", val_split=0.1
    )
    datamodule.setup("fit")
    fit = examples(datamodule.data_train)[0].double()  # the 270 rows that train, not the 30 that validate
    assert len(fit) == 270
    state = checkpoint["state_dict"]
    assert torch.allclose(state["mean"].double(), fit.mean(0), rtol=1e-5)
    assert torch.allclose(state["std"].double(), fit.std(0, correction=0), rtol=1e-5)
    assert run.metrics["test/acc"] > 0.8  # standardized, the scales do not matter (chance: 1/3)
    assert {f"test/class_acc/{name}" for name in CLASSES} <= set(run.metrics)


def test_tensorboard_has_the_confusion_matrices_and_no_image_grids(run: Run) -> None:
    events = EventAccumulator(str(run.dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    images = set(events.Tags()["images"])
    assert {"val/confusion_matrix", "test/confusion_matrix"} <= images
    assert not images & {"val/predictions", "test/mistakes"}  # rows are no pictures
    assert (run.dir / "curves.png").is_file()


def test_eval_with_only_the_checkpoint_reproduces_the_test_accuracy(
    make_cfg: Callable[..., DictConfig], run: Run
) -> None:
    evaluated = evaluate(make_cfg("eval", [f"ckpt_path={run.best}", "logger=none"]))
    for key in ("test/acc", *(f"test/class_acc/{name}" for name in CLASSES)):
        assert evaluated[key] == pytest.approx(run.metrics[key], abs=1e-7)


def test_predict_writes_the_id_the_class_and_a_probability_per_class(
    make_cfg: Callable[..., DictConfig], run: Run, tables: Path, tmp_path: Path
) -> None:
    new = pd.read_csv(tables / "new.csv")
    new.loc[3, "f2"] = None  # an empty cell costs that row only
    new.to_csv(tmp_path / "new.csv", index=False)
    csv_path = predict(make_cfg("predict", [f"ckpt_path={run.best}", f"inputs={tmp_path / 'new.csv'}"]))
    written = pd.read_csv(csv_path, keep_default_na=False)
    assert list(written) == ["patient", "note", "class", *(f"prob_{name}" for name in CLASSES), "error"]
    assert written["patient"].tolist() == new["patient"].tolist()
    assert written.loc[3, "error"] == "empty or no number: f2" and written.loc[3, "class"] == ""
    fine = written.drop(index=3)
    assert set(fine["class"]) <= set(CLASSES) and (fine["error"] == "").all()
    probabilities = fine[[f"prob_{name}" for name in CLASSES]].astype(float)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    model = load_checkpoint(run.best).eval()
    with torch.inference_mode():
        expected = model(torch.tensor(new.drop(index=3)[FEATURES].to_numpy(np.float32))).softmax(1)
    assert np.allclose(probabilities.to_numpy(), expected.numpy(), atol=1e-5)


def test_predict_refuses_rows_without_the_training_features_and_when_nothing_is_predicted(
    make_cfg: Callable[..., DictConfig], run: Run, tables: Path, tmp_path: Path
) -> None:
    pd.read_csv(tables / "new.csv").rename(columns={"f1": "F1"}).to_csv(tmp_path / "renamed.csv", index=False)
    with pytest.raises(
        UserError, match=r"renamed\.csv has no column f1: the model was trained on the features"
    ):
        predict(make_cfg("predict", [f"ckpt_path={run.best}", f"inputs={tmp_path / 'renamed.csv'}"]))
    empty = pd.read_csv(tables / "new.csv")
    empty["f0"] = "n/a"
    empty.to_csv(tmp_path / "empty.csv", index=False)
    with pytest.raises(UserError, match=r"nothing could be read to predict \(empty or no number: f0\)"):
        predict(make_cfg("predict", [f"ckpt_path={run.best}", f"inputs={tmp_path / 'empty.csv'}"]))


def test_onnx_takes_float32_features_and_matches_pytorch_on_data_like_rows(
    make_cfg: Callable[..., DictConfig], run: Run, tables: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnxruntime

    path = export(make_cfg("export", [f"ckpt_path={run.best}", "format=onnx"]))
    assert "(float32 table inputs)" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    assert given.name == "features" and given.type == "tensor(float)" and given.shape[1] == len(FEATURES)
    features = pd.read_csv(tables / "test.csv")[FEATURES].to_numpy(np.float32)  # the real rows, raw
    model = load_checkpoint(run.best).eval()
    with torch.inference_mode():
        expected = model(torch.from_numpy(features)).softmax(1).numpy()
    assert np.abs(session.run(None, {"features": features})[0] - expected).max() < 1e-5


def test_classes_sort_as_numbers_and_the_test_split_comes_from_the_training_file(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": np.arange(40.0), "y": np.arange(40.0) ** 2, "grade": [2, 10, 1, 2] * 10})
    frame.to_csv(tmp_path / "grades.csv", index=False)
    datamodule = TableDataModule(train=tmp_path / "grades.csv", label="grade", val_split=0.25, test_split=0.2)
    datamodule.setup("fit")
    assert datamodule.spec.classes == ["1", "2", "10"] and datamodule.spec.features == ["x", "y"]
    assert [len(part) for part in (datamodule.data_train, datamodule.data_val, datamodule.data_test)] == [
        24,
        8,
        8,
    ]
    parts = [
        examples(part)[0][:, 0] for part in (datamodule.data_train, datamodule.data_val, datamodule.data_test)
    ]
    assert sorted(torch.cat(parts).tolist()) == list(range(40))  # each row in exactly one part


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"label": "grade"}, r"data\.label=grade is none of the columns \[.patient., .f0."),
        ({"label": "diagnosis", "id": "name"}, r"data\.id=name is none of the columns"),
        (
            {"label": "diagnosis", "normalize": "global"},
            r"data\.normalize must be one of \['per_feature', 'none'\]",
        ),
        ({"label": "diagnosis", "features": ["f0", "size"]}, r"has no column size"),
        (
            {"label": "diagnosis", "test": "missing.csv"},
            r"data\.test=missing\.csv could not be read as a table",
        ),
    ],
)
def test_bad_table_settings_name_the_key(tmp_path: Path, settings: dict, message: str) -> None:
    rows(20, seed=0).to_csv(tmp_path / "rows.csv", index=False)
    with pytest.raises(UserError, match=message):
        TableDataModule(train=tmp_path / "rows.csv", val_split=2, **settings).setup("fit")


def test_empty_cells_and_unknown_or_missing_test_labels_are_refused(tmp_path: Path) -> None:
    train, test = rows(20, seed=0), rows(10, seed=1)
    train.loc[4, "f3"] = None
    train.to_csv(tmp_path / "holes.csv", index=False)
    with pytest.raises(
        UserError, match=r"holes\.csv: fill or drop the empty or non-numeric cells of \['f3'\]"
    ):
        TableDataModule(train=tmp_path / "holes.csv", label="diagnosis", val_split=2).setup("fit")
    rows(20, seed=0).to_csv(tmp_path / "train.csv", index=False)
    test.loc[2, "diagnosis"] = "cured"
    test.to_csv(tmp_path / "test.csv", index=False)
    datamodule = TableDataModule(
        train=tmp_path / "train.csv", test=tmp_path / "test.csv", label="diagnosis", val_split=2
    )
    with pytest.raises(UserError, match=r"the labels \['cured'\] are none of the training classes"):
        datamodule.setup("fit")
    test.drop(columns="diagnosis").to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(UserError, match=r"test\.csv has no column data\.label=diagnosis"):
        TableDataModule(train=tmp_path / "train.csv", test=tmp_path / "test.csv", label="diagnosis").setup(
            "fit"
        )


def test_a_parquet_file_reads_like_a_csv(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    rows(30, seed=0).to_parquet(tmp_path / "rows.parquet")
    datamodule = TableDataModule(train=tmp_path / "rows.parquet", label="diagnosis", val_split=3)
    datamodule.setup("fit")
    assert datamodule.spec.features == FEATURES and len(datamodule.data_test) == 6


@pytest.mark.slow
def test_the_readme_commands_train_evaluate_predict_and_export_a_table(tables: Path, tmp_path: Path) -> None:
    logs = f"paths.log_dir={tmp_path / 'logs'}"
    trained = run_cli(
        "lightning_template.train", [*table_data(tables), "trainer.max_epochs=3", logs], tmp_path
    )
    assert trained.returncode == 0, trained.stderr
    best = next(line.split(": ", 1)[1] for line in trained.stdout.splitlines() if line.startswith("Best"))
    evaluated = run_cli("lightning_template.eval", [f"ckpt_path={best}", logs], tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    test_acc = [
        line.split()[1]
        for line in trained.stdout.splitlines() + evaluated.stdout.splitlines()
        if line.startswith("  test/acc ")
    ]
    assert len(test_acc) == 2 and test_acc[0] == test_acc[1]
    predicted = run_cli(
        "lightning_template.predict", [f"ckpt_path={best}", f"inputs={tables / 'new.csv'}", logs], tmp_path
    )
    assert predicted.returncode == 0, predicted.stderr
    assert "Predicted: 12 of 12" in predicted.stdout
    exported = run_cli("lightning_template.export", [f"ckpt_path={best}", logs], tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "inputs drawn from the training data's mean and standard deviation" in exported.stdout


def test_image_only_settings_are_refused_for_a_table(
    make_cfg: Callable[..., DictConfig], tables: Path, tmp_path: Path
) -> None:
    with pytest.raises(UserError, match=r"data\.augment warps images; table data takes none"):
        TableDataModule(train=tables / "train.csv", label="diagnosis", augment=RandomWarp(rotate_degrees=10))
    cfg = make_cfg("train", [*table_data(tables), "model=cnn", "logger=none"])
    with pytest.raises(Exception) as error:  # noqa: PT011  (Hydra wraps it; the commands show the UserError)
        train(cfg)
    message = str(user_error_in(error.value))
    assert message == "model=cnn needs images (C, H, W); these inputs have shape [8]."
