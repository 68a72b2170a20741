"""Every metric a dashboard panel or an alert rule queries is one our processes export.

Names come from PromQL expressions in deploy/grafana/dashboards/*.json and
deploy/prometheus/alerts.yml; exported names come from ``ml.metrics.Metrics`` (in process) and
from scraping GET /metrics of the worker's and (when it exists) the REST service's Starlette app.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from ml.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
K8S_RULES = ROOT / "deploy" / "k8s" / "base" / "monitoring.yaml"

# Metrics that come from other exporters, each with its source.
EXTERNAL_METRICS = {
    "kafka_consumergroup_lag": "kafka-exporter (docker compose); Event Hubs: see deploy/README.md",
    "up": "Prometheus itself, one per scrape target",
}

PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (functions, keywords, labels and strings removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        token = match.group(0)
        rest = text[match.end() :].lstrip()
        if rest.startswith("("):  # a function call
            continue
        if token.lower() in PROMQL_KEYWORDS or token.startswith("$"):
            continue
        if match.start() > 0 and text[match.start() - 1] in "$.0123456789":
            continue  # $__rate_interval, 1e-9
        names.add(token)
    return names


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Sample names a registry exposes, whether or not a labelled child exists yet."""
    names: set[str] = set()
    for family in registry.collect():
        names |= sample_names(family.name, family.type)
    return names


def sample_names(name: str, kind: str) -> set[str]:
    if kind == "counter":
        return {f"{name}_total", f"{name}_created"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
    if kind == "summary":
        return {name, f"{name}_sum", f"{name}_count"}
    return {name}


def dashboard_exprs() -> list[tuple[str, str]]:
    exprs = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                exprs.append((f"{path.name}: {panel['title']}", target["expr"]))
    return exprs


def alert_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [(f"alert {rule['alert']}", rule["expr"]) for group in groups for rule in group["rules"]]


def used_names(exprs: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for where, expr in exprs:
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        for name in names:
            used.setdefault(name, set()).add(where)
    return used


# ------------------------------------------------------------------------------ the extractor


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        # plain rate over a labelled counter
        ('sum by (route) (rate(iris_http_requests_total{status=~"5.."}[5m]))', {"iris_http_requests_total"}),
        # histogram quantile: `le` is a label, not a metric
        (
            "histogram_quantile(0.95, sum by (le) (rate(iris_scoring_latency_seconds_bucket[$__rate_interval])))",
            {"iris_scoring_latency_seconds_bucket"},
        ),
        # binary operators, scientific numbers, vector()
        (
            "sum(rate(a_total[5m])) / clamp_min(sum(rate(b_total[5m])), 1e-9) > 0.05 or vector(0)",
            {"a_total", "b_total"},
        ),
        # subquery with a step and a function on it
        ("deriv(sum(kafka_consumergroup_lag)[10m:1m]) > 0 and up == 0", {"kafka_consumergroup_lag", "up"}),
        # a misspelled name is still reported (so the membership test below can catch it)
        ("max(iris_drift_shar)", {"iris_drift_shar"}),
    ],
)
def test_metric_names_are_extracted_from_promql(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


def test_sample_names_follow_the_exposition_format() -> None:
    names = exported_names(Metrics(drift=True).registry)
    assert {
        "iris_predictions_total",
        "iris_batch_size_bucket",
        "iris_batch_size_count",
        "iris_drift_share",
    } <= names
    assert "iris_predictions" not in names  # counters are only exposed with _total


# ------------------------------------------------------------------------------ the contract


def test_dashboards_and_alerts_exist() -> None:
    assert DASHBOARDS, "no Grafana dashboard in deploy/grafana/dashboards"
    assert alert_exprs(), "no alert rule in deploy/prometheus/alerts.yml"


def test_every_queried_metric_is_exported_in_process() -> None:
    exported = exported_names(Metrics(drift=True).registry)
    used = used_names([*dashboard_exprs(), *alert_exprs()])
    unknown = {
        name: sorted(where)
        for name, where in used.items()
        if name not in exported and name not in EXTERNAL_METRICS
    }
    assert not unknown, f"queried but not exported by ml.metrics.Metrics: {unknown}"


def test_dashboard_covers_the_operational_questions() -> None:
    used = used_names(dashboard_exprs())
    required = {
        "iris_http_requests_total",  # request rate, errors
        "iris_http_request_duration_seconds_bucket",  # latency percentiles
        "iris_prediction_errors_total",  # scoring errors
        "iris_predictions_total",  # predictions by label
        "iris_batch_size_sum",  # batch size
        "kafka_consumergroup_lag",  # consumer lag
        "iris_dlq_messages_total",  # DLQ rate
        "iris_feature_drift_score",  # drift per feature
        "iris_drift_share",
        "iris_model_info",  # model version
    }
    assert required <= set(used), f"dashboard lacks {sorted(required - set(used))}"


def test_alerts_cover_the_failure_modes() -> None:
    used = used_names(alert_exprs())
    for name in (
        "iris_prediction_errors_total",
        "iris_dlq_messages_total",
        "iris_dataset_drift",
        "iris_predictions_total",
        "kafka_consumergroup_lag",
    ):
        assert name in used, f"no alert on {name}"


def test_alert_rules_are_well_formed() -> None:
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            assert re.fullmatch(r"Iris[A-Za-z0-9]+", rule["alert"]), rule["alert"]
            assert rule["labels"]["severity"] in {"info", "warning", "critical"}
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


def test_prometheus_rule_of_the_operator_equals_alerts_yml() -> None:
    docs = list(yaml.safe_load_all(K8S_RULES.read_text()))
    rules = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert len(rules) == 1
    assert rules[0]["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"], (
        "deploy/k8s/base/monitoring.yaml drifted from deploy/prometheus/alerts.yml: regenerate it"
    )


def test_consumer_lag_queries_watch_the_workers_group() -> None:
    from ml.settings import Settings

    group = Settings().consumer_group
    for where, expr in [*dashboard_exprs(), *alert_exprs()]:
        for matcher in re.findall(r"kafka_consumergroup_lag\{([^}]*)\}", expr):
            assert f'consumergroup="{group}"' in matcher, f"{where}: lag of another group: {matcher}"


# ------------------------------------------------------------------------------ scraped /metrics


def scraped_names(body: str) -> set[str]:
    names: set[str] = set()
    for family in text_string_to_metric_families(body):
        names |= sample_names(family.name, family.type)
    return names


def iris_names_used() -> set[str]:
    used = used_names([*dashboard_exprs(), *alert_exprs()])
    return {name for name in used if name.startswith("iris_")}


def scrape(app: Any) -> httpx.Response:
    """GET /metrics in process, with the app's lifespan run around it."""

    async def get() -> httpx.Response:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                return await client.get("/metrics")

    return asyncio.run(get())


DRIFT_SERIES = {
    "iris_drift_share",
    "iris_dataset_drift",
    "iris_feature_drift_score",
    "iris_feature_drift_p_value",
    "iris_drift_windows_total",
    "iris_drift_windows_skipped_total",
}


def test_worker_metrics_endpoint_exports_every_queried_metric(tmp_path: Path) -> None:
    from consumers.drift_monitor import DriftMonitor
    from consumers.worker import WorkerState, create_http_app
    from ml.model import ModelHolder
    from ml.settings import Settings

    metrics = Metrics()
    DriftMonitor(Settings(reports_dir=tmp_path), metrics)  # the worker's monitor adds drift's series
    state = WorkerState(holder=ModelHolder(), metrics=metrics)
    response = scrape(create_http_app(state))
    assert response.status_code == 200
    missing = iris_names_used() - scraped_names(response.text)
    assert not missing, f"the worker's GET /metrics lacks {sorted(missing)}"


def test_rest_metrics_endpoint_exports_every_queried_metric_but_drift(registry) -> None:  # type: ignore[no-untyped-def]
    from app.server import create_app

    app = create_app(registry.settings())
    response = scrape(app)
    assert response.status_code == 200
    scraped = scraped_names(response.text)
    missing = iris_names_used() - DRIFT_SERIES - scraped
    assert not missing, f"the REST service's GET /metrics lacks {sorted(missing)}"
    exported = {name for name in scraped if name.startswith("iris_")}
    assert not exported & DRIFT_SERIES, "REST computes no drift: it must not export always-0 gauges"
