"""The /metrics exposition (issue 16, point 22): process and platform collectors, no ``_created``
series, and ``promtool check metrics`` (Debian's prometheus package) clean on the text."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ml.metrics import Metrics


def _text(metrics: Metrics) -> str:
    metrics.predictions.labels(source="rest", model_version="1", label="setosa").inc()
    metrics.scoring_latency.labels(source="rest").observe(0.001)
    metrics.model_reloads.inc()
    return metrics.exposition().decode()


@pytest.mark.parametrize("drift", [False, True], ids=["rest", "worker"])
def test_process_and_platform_collectors_and_no_created_series(drift: bool) -> None:
    text = _text(Metrics(drift=drift))
    assert "process_cpu_seconds_total" in text and "process_resident_memory_bytes" in text
    assert "python_info{" in text
    assert "_created" not in text
    assert "iris_predictions_total{" in text


def test_a_registry_given_by_the_caller_gets_no_process_collectors() -> None:
    from prometheus_client import CollectorRegistry

    text = _text(Metrics(CollectorRegistry()))
    assert "process_cpu_seconds_total" not in text and "_created" not in text


def promtool_problems(text: str) -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed: `make system-deps` installs Debian's prometheus package")
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    return (
        (done.stdout + done.stderr).strip()
        if done.returncode or done.stdout.strip() or done.stderr.strip()
        else ""
    )


@pytest.mark.parametrize("drift", [False, True], ids=["rest", "worker"])
def test_promtool_check_metrics_is_clean(drift: bool) -> None:
    metrics = Metrics(drift=drift)
    if drift:
        metrics.feature_drift_score.labels(feature="petal_width", stattest="ks").set(0.5)
        metrics.drift_windows_skipped.labels(reason="too_few_rows").inc()
    assert promtool_problems(_text(metrics)) == ""
