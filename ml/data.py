"""DVC stage ``prepare``: the bundled Iris data set to ``data/raw``, then a stratified split."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split

from ml import paths
from ml.params import PrepareParams, read_section
from ml.schema import FEATURES, LABELS


def load_raw() -> pd.DataFrame:
    """scikit-learn's bundled copy of Iris (no download): the four features and the species name."""
    bunch = load_iris(as_frame=True)
    frame = bunch.frame.rename(columns=dict(zip(bunch.feature_names, FEATURES, strict=True)))
    frame[paths.LABEL_COLUMN] = [LABELS[int(i)] for i in frame.pop("target")]
    result: pd.DataFrame = frame[[*FEATURES, paths.LABEL_COLUMN]]
    return result


def split(frame: pd.DataFrame, params: PrepareParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Deterministic stratified train/test split."""
    train, test = train_test_split(
        frame,
        test_size=params.test_size,
        random_state=params.seed,
        stratify=frame[paths.LABEL_COLUMN],
    )
    return train.reset_index(drop=True), test.reset_index(drop=True)


def file_md5(path: Path) -> str:
    """The MD5 of a file's bytes (what DVC 3 records for a single-file output)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> None:
    params: PrepareParams = read_section("prepare")
    raw = load_raw()
    paths.RAW_DATA.parent.mkdir(parents=True, exist_ok=True)
    raw.to_csv(paths.RAW_DATA, index=False)
    train, test = split(raw, params)
    paths.TRAIN_DATA.parent.mkdir(parents=True, exist_ok=True)
    train.to_csv(paths.TRAIN_DATA, index=False)
    test.to_csv(paths.TEST_DATA, index=False)
    print(f"prepare: rows={len(raw)} train={len(train)} test={len(test)} seed={params.seed}")


if __name__ == "__main__":
    from ml.stage import run_stage

    run_stage(main)
