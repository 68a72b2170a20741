"""Delayed labels without a broker: the feedback check, the bounded join state, the live window's
numbers against scikit-learn's, and the promotion gate (passes, fails, ties, too few labels)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from ml.feedback import Feedback, JoinState, LiveWindow, check_feedback, macro_f1
from ml.messages import Rejected
from ml.promotion import decide, gather
from ml.schema import LABELS


def test_window_numbers_are_scikit_learns() -> None:

    rng = np.random.default_rng(4)
    truth = rng.choice(LABELS, 300).tolist()
    ours = [t if rng.random() < 0.8 else rng.choice(LABELS) for t in truth]
    theirs = [t if rng.random() < 0.9 else str(rng.choice(LABELS[:2])) for t in truth]
    window = LiveWindow(300)
    message = None
    for t, o, x in zip(truth, ours, theirs, strict=True):
        message = window.add(t, {("champion", "1"): str(o), ("challenger", "2"): x})
    assert message is not None
    models = {m["alias"]: m for m in message["models"]}
    for alias, predicted in (("champion", ours), ("challenger", theirs)):
        assert models[alias]["accuracy"] == pytest.approx(accuracy_score(truth, predicted), abs=1e-6)
        assert models[alias]["f1_macro"] == pytest.approx(
            f1_score(truth, predicted, average="macro"), abs=1e-6
        )
        assert models[alias]["confusion"] == confusion_matrix(truth, predicted, labels=list(LABELS)).tolist()
    assert message["paired"][0]["count"] == 300


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"{", "invalid_json"),
        (b"[1]", "validation_error"),
        (b'{"label": "setosa"}', "validation_error"),
        (b'{"id": "", "label": "setosa"}', "validation_error"),
        (b'{"id": "a", "label": "rose"}', "validation_error"),
        (b'{"id": "a", "label": "setosa", "labelled_at": 5}', "validation_error"),
        (b'{"id": "a", "label": "setosa", "pad": "' + b"x" * 2000 + b'"}', "too_large"),
    ],
)
def test_bad_feedback_is_refused_with_a_reason(value, code) -> None:
    got = check_feedback(value, max_bytes=1024)
    assert isinstance(got, Rejected) and got.code == code and got.detail


def test_good_feedback() -> None:
    got = check_feedback(b'{"id": "r-1", "label": "virginica", "labelled_at": "2026-12-07T00:00:00Z"}', 1024)
    assert got == Feedback("r-1", "virginica", "2026-12-07T00:00:00Z")


def test_the_join_state_is_bounded_by_count_and_age() -> None:
    now = time.time()
    state = JoinState(max_ids=3, ttl_s=60)
    for i in range(5):
        state.add(f"r-{i}", {("champion", "1"): "setosa"}, at=now)
    assert len(state) == 3 and state.evicted == 2
    assert state.take("r-0") is None and state.take("r-1") is None  # evicted: unmatched
    assert state.take("r-4") == {("champion", "1"): "setosa"}
    assert state.take("r-4") is False  # a second label for the same id is a duplicate
    assert state.take("r-3", now=now + 61) is None  # older than the TTL: unmatched
    old = JoinState(max_ids=10, ttl_s=60)
    old.add("r-old", {("champion", "1"): "setosa"}, at=now - 120)  # e.g. rebuilt from an old record
    assert len(old) == 0


def test_shadow_records_merge_into_one_entry() -> None:
    state = JoinState(10, 60)
    state.add_predictions([{"id": "a", "label": "setosa", "model_version": "1", "model_alias": "champion"}])
    state.add_shadow(
        [
            {
                "id": "a",
                "champion_version": "1",
                "challenger_version": "2",
                "champion_label": "setosa",
                "challenger_label": "versicolor",
            }
        ]
    )
    assert state.take("a") == {("champion", "1"): "setosa", ("challenger", "2"): "versicolor"}


def _window(champion: list[list[int]], challenger: list[list[int]], cv: str = "1", xv: str = "2") -> dict:
    return {
        "paired": [
            {
                "champion_version": cv,
                "challenger_version": xv,
                "count": sum(map(sum, champion)),
                "champion": {"confusion": champion},
                "challenger": {"confusion": challenger},
            }
        ]
    }


GOOD = [[10, 0, 0], [0, 9, 1], [0, 1, 9]]
WORSE = [[10, 0, 0], [0, 6, 4], [0, 4, 6]]


def test_the_gate_promotes_a_challenger_that_is_not_worse() -> None:
    decision = decide(gather([_window(WORSE, GOOD)] * 2, "1", "2"), min_labelled=50, margin=0.0)
    assert decision.promote and "not worse" in decision.sentence
    assert decision.evidence.labelled == 60 and decision.evidence.windows == 2


def test_the_gate_keeps_the_aliases_for_a_worse_challenger() -> None:
    decision = decide(gather([_window(GOOD, WORSE)], "1", "2"), min_labelled=10, margin=0.05)
    assert not decision.promote and "worse" in decision.sentence and "aliases stay" in decision.sentence
    assert decision.evidence.challenger_f1 == pytest.approx(macro_f1(WORSE))


def test_a_tie_promotes() -> None:
    decision = decide(gather([_window(GOOD, GOOD)], "1", "2"), min_labelled=10, margin=0.0)
    assert decision.promote and "ties" in decision.sentence


def test_a_margin_lets_a_slightly_worse_challenger_through() -> None:
    slightly = [[10, 0, 0], [0, 9, 1], [0, 2, 8]]
    assert not decide(gather([_window(GOOD, slightly)], "1", "2"), 10, 0.0).promote
    assert decide(gather([_window(GOOD, slightly)], "1", "2"), 10, 0.05).promote


def test_too_few_labels_refuses_with_a_sentence() -> None:
    decision = decide(gather([_window(WORSE, GOOD)], "1", "2"), min_labelled=500, margin=0.0)
    assert not decision.promote
    assert decision.sentence.startswith("not enough live evidence: 30 labelled ids")
    assert "--min-labelled 500" in decision.sentence


def test_only_the_current_pair_counts() -> None:
    evidence = gather([_window(GOOD, WORSE, "1", "3"), _window(WORSE, GOOD, "1", "2")], "1", "2")
    assert evidence.windows == 1 and evidence.challenger_f1 == pytest.approx(macro_f1(GOOD))


def test_published_labels_are_the_species_each_sample_row_was_drawn_from() -> None:
    import orjson

    from consumers.publish import _class_stats, sample_labels, sample_rows
    from ml.schema import FEATURES

    rows = sample_rows(400, seed=9)
    labels = sample_labels(400, seed=9, share=0.25)
    assert len(labels) == 100
    by_id = {r["id"]: r for r in rows}
    names, means, stds, _ = _class_stats()
    likeliest = 0
    for key, value in labels:
        body = orjson.loads(value)
        assert key.decode() == body["id"] and body["id"] in by_id
        assert check_feedback(value, 1024) == Feedback(body["id"], body["label"], body["labelled_at"])
        row = np.array([by_id[body["id"]][f] for f in FEATURES])
        fit = [-(((row - m) / s) ** 2).sum() for m, s in zip(means, stds, strict=True)]
        likeliest += names[int(np.argmax(fit))] == body["label"]
    assert likeliest >= 90  # the row is (almost always) likeliest under the species it was drawn from


def test_the_evidently_classification_report_of_a_window(tmp_path) -> None:
    import json
    import warnings

    from ml.performance_report import PROJECT, save_window_reports

    with warnings.catch_warnings():  # litestar's deprecation noise at import (evidently.ui)
        warnings.simplefilter("ignore")
        from evidently.ui.workspace import Workspace

    rng = np.random.default_rng(6)
    truth = rng.choice(LABELS, 240).tolist()
    ours = [t if rng.random() < 0.85 else str(rng.choice(LABELS)) for t in truth]
    window = LiveWindow(240)
    message = None
    for t, o in zip(truth, ours, strict=True):
        message = window.add(t, {("champion", "3"): o, ("challenger", "4"): t})
    assert message is not None
    written = save_window_reports(message, tmp_path / "performance", 10, tmp_path / "workspace")
    assert len(written) == 2 and all(Path(p).is_file() and Path(p).stat().st_size > 10_000 for p in written)
    documents = [json.loads(Path(p).with_suffix(".json").read_text()) for p in written]
    by_alias = {d["alias"]: d for d in documents}
    for d in documents:
        metrics = {m["metric_name"].split("(")[0]: m["value"] for m in d["evidently"]["metrics"]}
        assert metrics["Accuracy"] == pytest.approx(d["accuracy"], abs=1e-6)
        assert metrics["F1Score"] == pytest.approx(d["f1_macro"], abs=1e-6)  # Evidently's macro F1 is ours
    assert by_alias["champion"]["f1_macro"] == pytest.approx(f1_score(truth, ours, average="macro"), abs=1e-6)
    workspace = Workspace(str(tmp_path / "workspace"))
    (project,) = workspace.search_project(PROJECT)
    assert len(workspace.list_runs(project.id)) == 2


def test_a_label_that_overtakes_its_prediction_waits_for_it() -> None:
    now = time.time()
    state = JoinState(max_ids=10, ttl_s=60, early_s=5)
    assert state.take("early") is None
    state.wait("early", "virginica", now=now)
    state.wait("never", "setosa", now=now)
    assert state.waiting == 2
    state.add_scored(["early", "other"], [(("champion", "1"), ["versicolor", "setosa"])])
    assert state.ready == [("virginica", {("champion", "1"): "versicolor"})]
    assert state.take("early") is False  # joined once, a second label is a duplicate
    assert state.expire_early(now=now + 1) == 0
    assert state.expire_early(now=now + 6) == 1  # "never" waited too long: unmatched
    assert state.waiting == 0
