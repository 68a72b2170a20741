"""Champion against challenger (ml/experiment.py): canary stickiness, one call per model per
batch, shadow agreement, the optional challenger's watcher, and `promote --alias challenger`."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from ml import experiment as ex
from ml.experiment import Agreement, Experiment, outcome_records, score_batch, shadow_records
from ml.metrics import Metrics
from ml.model import ModelHolder, load_model
from ml.predict import score
from ml.reload import ModelWatcher

CHAMPION, CHALLENGER = "models:/iris-classifier@champion", "models:/iris-classifier@challenger"


@pytest.fixture(scope="module")
def models(duel):
    champion = load_model(duel.client, CHAMPION, with_reference=False)
    challenger = dataclasses.replace(
        load_model(duel.client, CHALLENGER, with_reference=False), role="challenger"
    )
    return champion, challenger


def _rows(n: int, seed: int = 0) -> np.ndarray:
    """Rows around the versicolor/virginica border, where the two models sometimes disagree."""
    rng = np.random.default_rng(seed)
    centre = np.array([6.3, 2.8, 4.9, 1.6])
    return centre + rng.normal(0, [0.5, 0.3, 0.5, 0.3], size=(n, 4))


def test_the_bucket_of_an_id_is_the_same_in_every_process() -> None:
    code = "from ml.experiment import bucket; print([bucket(f'r-{i}') for i in range(50)])"
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("0", "1", "12345")
    }
    assert len(runs) == 1
    assert runs.pop().strip() == str([ex.bucket(f"r-{i}") for i in range(50)])


def test_canary_is_sticky_by_id_and_takes_about_its_share(models) -> None:
    champion, challenger = models
    experiment = Experiment(ModelHolder(champion), ModelHolder(challenger), canary_percent=10)
    ids = [f"req-{i}" for i in range(20_000)]
    first = [experiment.canary(i) for i in ids]
    again = Experiment(ModelHolder(champion), ModelHolder(challenger), canary_percent=10)
    assert [again.canary(i) for i in ids] == first  # the same id, the same model, every time
    assert 0.09 < sum(first) / len(ids) < 0.11
    # a batch's answers follow the same assignment, whatever the batch it arrives in
    rows = _rows(len(ids))
    whole = outcome_records(ids, score_batch(experiment, rows, ids), "stream")
    alone = outcome_records(ids[:7], score_batch(experiment, rows[:7], ids[:7]), "stream")
    assert [r["model_alias"] for r in whole] == ["challenger" if c else "champion" for c in first]
    assert alone == [dict(r, scored_at=alone[i]["scored_at"]) for i, r in enumerate(whole[:7])]
    versions = {r["model_alias"]: r["model_version"] for r in whole}
    assert versions == {"champion": champion.version, "challenger": challenger.version}
    assert [r["id"] for r in whole] == ids  # batch order kept
    nobody = Experiment(ModelHolder(champion), ModelHolder(), canary_percent=50)  # no challenger
    assert {r["model_alias"] for r in outcome_records(ids, score_batch(nobody, rows, ids), "s")} == {
        "champion"
    }


@pytest.mark.parametrize(
    ("shadow", "canary", "calls"), [(False, 0, 1), (False, 30, 2), (True, 0, 2), (True, 30, 2)]
)
def test_each_model_scores_a_batch_in_one_call(models, monkeypatch, shadow, canary, calls) -> None:
    champion, challenger = models
    made: list[tuple[str, int]] = []

    def counting(model, features):
        made.append((model.role, len(features)))
        return score(model, features)

    monkeypatch.setattr(ex, "score", counting)
    experiment = Experiment(
        ModelHolder(champion), ModelHolder(challenger), shadow=shadow, canary_percent=canary
    )
    ids = [f"id-{i}" for i in range(500)]
    outcome = score_batch(experiment, _rows(500), ids)
    assert len(made) == calls
    assert len({role for role, _ in made}) == calls
    assert len(outcome) == 500
    assert (outcome.shadow is not None) is shadow


def test_shadow_agreement_matches_the_offline_comparison(models) -> None:
    champion, challenger = models
    rows = _rows(2000, seed=5)
    offline = champion.estimator.predict(rows) == challenger.estimator.predict(rows)
    assert 0 < offline.sum() < len(rows)  # the two models do disagree here
    experiment = Experiment(ModelHolder(champion), ModelHolder(challenger), shadow=True)
    ids = [f"s-{i}" for i in range(len(rows))]
    outcome = score_batch(experiment, rows, ids)
    answers = outcome_records(ids, outcome, "stream")
    assert {a["model_alias"] for a in answers} == {"champion"}  # the caller gets the champion's answer
    records = shadow_records(ids, outcome.shadow)
    assert [r["agree"] for r in records] == offline.tolist()
    assert [r["champion_label"] for r in records] == [a["label"] for a in answers]
    assert {(r["champion_version"], r["challenger_version"]) for r in records} == {
        (champion.version, challenger.version)
    }
    metrics = Metrics()
    agreement = Agreement(metrics, window=len(rows))
    ratio = agreement.record(outcome.shadow)
    assert ratio == pytest.approx(offline.mean(), abs=1e-6)
    labels = {"champion_version": champion.version, "challenger_version": challenger.version}
    assert metrics.registry.get_sample_value("iris_shadow_agreement_ratio", labels) == ratio
    disagreed = metrics.registry.get_sample_value(
        "iris_shadow_comparisons_total", {**labels, "agree": "false"}
    )
    assert disagreed == (~offline).sum()


def test_agreement_is_over_the_last_window_of_requests(models) -> None:
    champion, _ = models
    metrics = Metrics()
    agreement = Agreement(metrics, window=100)
    rows = _rows(50)
    same = score(champion, rows)
    other = dataclasses.replace(same, labels=np.array(["nope"] * 50))
    assert agreement.record((same, other)) == 0.0
    assert agreement.record((same, same)) == 0.5  # 50 of the last 100 agreed
    assert agreement.record((same, same)) == 1.0  # the first batch fell out of the last 100
    assert agreement.record((same, other)) == 0.5


def test_the_challenger_is_optional_and_follows_its_alias(fresh_registry) -> None:
    from ml.register import promote

    holder, metrics = ModelHolder(), Metrics()
    watcher = ModelWatcher(
        fresh_registry.client, CHALLENGER, holder, metrics, poll_seconds=0.1, role="challenger", optional=True
    )
    assert asyncio.run(watcher.check_once()) is False  # no @challenger: not an error
    assert not holder.ready and watcher.last_error is None
    assert metrics.registry.get_sample_value("iris_model_reload_errors_total") == 0
    rival = fresh_registry.train_version("random_forest")
    promote(fresh_registry.client, "iris-classifier", rival, "challenger")
    assert asyncio.run(watcher.check_once()) is True
    assert holder.current.version == rival and holder.current.role == "challenger"
    info = {"name": "iris-classifier", "version": rival, "alias": "challenger"}
    assert metrics.registry.get_sample_value("iris_model_info", info) == 1
    fresh_registry.client.delete_registered_model_alias("iris-classifier", "challenger")
    assert asyncio.run(watcher.check_once()) is False
    assert not holder.ready
    assert metrics.registry.get_sample_value("iris_model_info", info) is None


def test_promote_sets_the_challenger_alias(fresh_registry, monkeypatch) -> None:
    from typer.testing import CliRunner

    from iris_scorer.cli import app

    rival = fresh_registry.train_version("random_forest")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_registry.tracking_uri)
    result = CliRunner().invoke(app, ["promote", "--alias", "challenger", "--version", rival])
    assert result.exit_code == 0, result.output
    assert f"iris-classifier@challenger: v- → v{rival}" in result.output
    got = fresh_registry.client.get_model_version_by_alias("iris-classifier", "challenger")
    assert str(got.version) == rival
    champion = fresh_registry.client.get_model_version_by_alias("iris-classifier", "champion")
    assert str(champion.version) == fresh_registry.champion_version  # untouched
