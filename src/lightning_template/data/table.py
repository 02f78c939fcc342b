"""TableDataModule: rows of a CSV (or Parquet) file, numeric feature columns and one column of class labels."""

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lightning_template.data.datamodule import InMemoryDataModule, InMemoryDataset
from lightning_template.errors import UserError

log = logging.getLogger(__name__)


def read_table(path: str | Path, key: str) -> pd.DataFrame:
    """A CSV file, or a Parquet file by its suffix (with pyarrow: pip install -e ".[parquet]")."""
    try:
        return pd.read_parquet(path) if Path(path).suffix == ".parquet" else pd.read_csv(path)
    except ImportError as exc:
        raise UserError(f'{key}={path}: Parquet files need pyarrow: pip install -e ".[parquet]".') from exc
    except (OSError, ValueError) as exc:  # missing, empty or malformed
        raise UserError(f"{key}={path} could not be read as a table ({exc}).") from exc


def feature_values(frame: pd.DataFrame, features: list[str], key: str) -> pd.DataFrame:
    """The feature columns as numbers (NaN where a cell is empty or no number), or which ones are missing."""
    missing = [name for name in features if name not in frame.columns]
    if missing:
        others = [name for name in frame.columns if name not in features]
        raise UserError(
            f"{key} has no column {', '.join(map(str, missing))}: the model was trained on the features "
            f"{features}. Its other columns: {others}."
        )
    return frame[features].apply(pd.to_numeric, errors="coerce")


class TableDataModule(InMemoryDataModule):
    """Each row an example: by default every numeric column but the label and the id is a feature."""

    kind = "table"

    def __init__(
        self,
        train: str | Path,
        label: str,
        test: str | Path | None = None,
        id: str | None = None,
        features: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**{"normalize": "per_feature", **kwargs})
        self.train, self.label, self.test, self.id, self.features = train, label, test, id, features

    def examples(
        self, frame: pd.DataFrame, key: str, features: list[str], classes: list[Any]
    ) -> InMemoryDataset:
        """Rows as float32 features and label numbers; an empty cell or an unknown label stops."""
        if self.label not in frame.columns:
            raise UserError(f"{key} has no column data.label={self.label}; a test file needs its labels too.")
        values = feature_values(frame, features, key)
        if values.isna().any().any():
            empty = values.columns[values.isna().any()].tolist()
            raise UserError(f"{key}: fill or drop the empty or non-numeric cells of {empty}.")
        labels = frame[self.label].map({value: number for number, value in enumerate(classes)})
        if labels.isna().any():
            unknown = frame[self.label][labels.isna()].unique().tolist()[:5]
            raise UserError(f"{key}: the labels {unknown} are none of the training classes {classes}.")
        return InMemoryDataset(torch.tensor(values.to_numpy(np.float32)), torch.tensor(labels.to_numpy()))

    def load(self) -> tuple[InMemoryDataset, InMemoryDataset | None, list[str], list[str]]:
        frame = read_table(self.train, "data.train")
        for name, column in (("label", self.label), ("id", self.id)):
            if column is not None and column not in frame.columns:
                raise UserError(f"data.{name}={column} is none of the columns {list(frame)}.")
        numeric = frame.select_dtypes("number").columns  # classes sort as numbers in a column of numbers
        features = self.features or [name for name in numeric if name not in (self.label, self.id)]
        if not features:
            raise UserError(f"data.train={self.train} has no numeric column besides the label and id.")
        log.info("Features: %s; not used: %s", features, [c for c in frame if c not in features])
        classes = sorted(frame[self.label].dropna().unique())
        train = self.examples(frame, f"data.train={self.train}", features, classes)
        test = None  # without a test file: data.test_split of the training rows
        if self.test is not None:
            test = self.examples(
                read_table(self.test, "data.test"), f"data.test={self.test}", features, classes
            )
        return train, test, [str(value) for value in classes], features
