"""The benchmark harness's pure arithmetic: medians, spreads, ratios, goals, ABAB order, tables.

No timing here: benchmarks run with `make bench`, never as assertions in the test suite.
"""

from __future__ import annotations

import pytest

from bench.harness import (
    Goal,
    ScenarioResult,
    check_goal,
    evaluate_goals,
    interleave,
    markdown,
    median,
    ratio,
    spread,
    summarise,
)


def test_median_and_spread_of_repeats() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert spread([3.0, 1.0, 2.0]) == (1.0, 3.0)
    assert median([]) is None
    assert spread([]) is None


@pytest.mark.parametrize(
    ("ours", "baseline", "expected"),
    [
        (200.0, 100.0, 2.0),
        (50.0, 100.0, 0.5),
        (None, 100.0, None),  # our system was skipped
        (100.0, None, None),  # the baseline was skipped
        (100.0, 0.0, None),  # a dead baseline is no reason to divide by zero
    ],
)
def test_ratio_is_ours_over_baseline(
    ours: float | None, baseline: float | None, expected: float | None
) -> None:
    assert ratio(ours, baseline) == expected


@pytest.mark.parametrize(
    ("value", "op", "target", "expected"),
    [
        (2.0, ">=", 2.0, True),  # exactly on the goal passes
        (1.99, ">=", 2.0, False),
        (0.2, "<=", 0.2, True),
        (0.21, "<=", 0.2, False),
        (None, ">=", 1.0, None),  # nothing measured: neither pass nor fail
    ],
)
def test_check_goal(value: float | None, op: str, target: float, expected: bool | None) -> None:
    assert check_goal(value, op, target) is expected


def test_check_goal_rejects_unknown_operator() -> None:
    with pytest.raises(ValueError, match="operator"):
        check_goal(1.0, ">", 0.0)


def test_interleave_is_abab() -> None:
    assert interleave(["A", "B"], 3) == [(0, "A"), (0, "B"), (1, "A"), (1, "B"), (2, "A"), (2, "B")]


def test_summarise_and_goals_from_runs() -> None:
    runs = {
        "ours": [{"rps": 300.0, "errors": 0.0}, {"rps": 100.0, "errors": 0.0}, {"rps": 200.0, "errors": 0.0}],
        "A": [{"rps": 90.0}, {"rps": 100.0}, {"rps": 110.0}],
    }
    summary = summarise(runs)
    assert summary["ours"]["rps"] == {"median": 200.0, "min": 100.0, "max": 300.0, "n": 3}
    goals = evaluate_goals(
        summary,
        [
            Goal("ours/A >= 2", "rps", ">=", 2.0, "ours", "A"),
            Goal("ours/A >= 3", "rps", ">=", 3.0, "ours", "A"),
            Goal("no errors", "errors", "<=", 0.0, "ours"),
            Goal("vs a skipped system", "rps", ">=", 1.0, "ours", "B"),
        ],
    )
    assert [(g["value"], g["pass"]) for g in goals] == [(2.0, True), (2.0, False), (0.0, True), (None, None)]


def test_markdown_table_shows_medians_ratios_and_verdicts() -> None:
    result = ScenarioResult("rest", "demo scenario", columns=["rps"])
    result.add("ours", {"rps": 200.0})
    result.add("A", {"rps": 100.0})
    result.goals = [Goal("ours/A >= 2", "rps", ">=", 2.0, "ours", "A")]
    result.skip("B", "not installed")
    report = {
        "started_at": "2026-01-01T00:00:00Z",
        "command": "python -m bench --quick",
        "mode": "quick",
        "wall_seconds": 1.0,
        "machine": {
            "cores": 2,
            "cpu": "x",
            "python": "3.11",
            "platform": "linux",
            "packages": {"mlflow": "3"},
        },
        "scenarios": [result.to_json()],
    }
    text = markdown(report)
    assert "| ours | 200 (200-200, n=1) |" in text
    assert "| ours/A >= 2 | 2 | >= 2 | PASS |" in text
    assert "skipped B: not installed" in text
