# ruff: noqa: F811 - the fixtures are imported from test_worker_integration
"""SASL_SSL with PLAIN on a real Kafka listener, exactly as Azure Event Hubs uses it (issue 15).

The broker gets a SASL_SSL listener whose certificate a CA made in this test signed, and one
PLAIN user: ``$ConnectionString``, whose password is an Event Hubs connection string. The worker,
the publisher and the backfill connect with the documented settings only
(``IRIS_KAFKA_SECURITY_PROTOCOL``, ``IRIS_KAFKA_SASL_MECHANISM``, ``IRIS_KAFKA_SASL_USERNAME``,
``IRIS_KAFKA_SASL_PASSWORD``, ``IRIS_KAFKA_SSL_CA_FILE``). A wrong password is named, never shown.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from kafka_fixtures import own_real_cluster
from stream_helpers import wait_until
from test_worker_integration import (
    IRIS_SCORER,
    REPO_ROOT,
    Collector,
    Worker,
    collectors,  # noqa: F401 - fixture
    worker_env,
    workers,  # noqa: F401 - fixture
)
from tls_certs import make_ca

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.real_kafka]

USERNAME = "$ConnectionString"
PASSWORD = (
    "Endpoint=sb://iris-test.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
    "SharedAccessKey=c2VjcmV0LWtleS1mb3ItdGhlLXRlc3Q="
)
WRONG = PASSWORD.replace("c2VjcmV0", "d3Jvbmc")


@pytest.fixture(scope="module")
def sasl_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    tls = make_ca(tmp_path_factory.mktemp("tls"))
    jaas = f'org.apache.kafka.common.security.plain.PlainLoginModule required user_{USERNAME}="{PASSWORD}";'
    properties = {
        "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_ssl.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_ssl.plain.sasl.jaas.config": jaas,
        "listener.name.sasl_ssl.ssl.keystore.type": "PKCS12",
        "listener.name.sasl_ssl.ssl.keystore.location": str(tls.keystore),
        "listener.name.sasl_ssl.ssl.keystore.password": tls.password,
        "listener.name.sasl_ssl.ssl.key.password": tls.password,
    }
    with own_real_cluster(1, listeners=("SASL_SSL",), extra_properties=properties) as cluster:
        yield cluster, tls.ca_pem


def sasl_env(base: dict[str, str], cluster: Any, ca: Path, password: str = PASSWORD) -> dict[str, str]:
    return {
        **base,
        "IRIS_KAFKA_BOOTSTRAP_SERVERS": cluster.listener_bootstrap("SASL_SSL"),
        "IRIS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "IRIS_KAFKA_SASL_MECHANISM": "PLAIN",
        "IRIS_KAFKA_SASL_USERNAME": USERNAME,
        "IRIS_KAFKA_SASL_PASSWORD": password,
        "IRIS_KAFKA_SSL_CA_FILE": str(ca),
    }


def run(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IRIS_SCORER, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_worker_publisher_and_backfill_connect_over_sasl_ssl_with_the_documented_settings(
    registry: Any,
    sasl_cluster: tuple[Any, Path],
    tmp_path: Path,
    workers: list[Worker],
    collectors: list[Collector],
) -> None:
    cluster, ca = sasl_cluster
    env = sasl_env(worker_env(registry, cluster.bootstrap, tmp_path), cluster, ca)
    worker = Worker(env)
    workers.append(worker)
    worker.wait_ready()
    published = run(env, "publish", "--count", "1000", "--seed", "5")
    assert published.returncode == 0, published.stderr
    collector = Collector(cluster.bootstrap, ("iris.predictions",))  # the PLAINTEXT listener
    collectors.append(collector)
    wait_until(lambda: collector.count("iris.predictions") >= 1000, "1000 predictions over SASL_SSL")
    out = tmp_path / "backfill.parquet"
    backfill = run(env, "backfill", "--from-topic", "iris.requests", "--output", str(out))
    assert backfill.returncode == 0, backfill.stderr
    assert pq.read_metadata(out).num_rows == 1000
    logs = worker.output() + published.stderr + published.stdout + backfill.stderr + backfill.stdout
    assert PASSWORD not in logs and "SharedAccessKey=" not in logs
    assert worker.terminate() == 0


def test_a_wrong_password_is_named_not_printed_and_ready_says_why(
    registry: Any, sasl_cluster: tuple[Any, Path], tmp_path: Path, workers: list[Worker]
) -> None:
    cluster, ca = sasl_cluster
    env = sasl_env(worker_env(registry, cluster.bootstrap, tmp_path), cluster, ca, password=WRONG)
    published = run(env, "publish", "--count", "10")
    assert published.returncode != 0
    assert "IRIS_KAFKA_SASL_PASSWORD" in published.stderr, published.stderr
    assert WRONG not in published.stderr + published.stdout

    worker = Worker(env)
    workers.append(worker)

    def not_ready() -> httpx.Response | None:
        try:
            answer = httpx.get(f"http://127.0.0.1:{worker.port}/ready", timeout=2)
        except httpx.HTTPError:
            return None
        return answer if "IRIS_KAFKA_SASL_PASSWORD" in answer.text else None

    wait_until(lambda: not_ready() is not None, "/ready naming the password setting", deadline_s=90)
    answer = not_ready()
    assert answer is not None and answer.status_code == 503
    assert WRONG not in answer.text and WRONG not in worker.output()


def test_a_broker_certificate_without_its_ca_names_the_ca_setting(
    registry: Any, sasl_cluster: tuple[Any, Path], tmp_path: Path
) -> None:
    cluster, ca = sasl_cluster
    env = sasl_env(worker_env(registry, cluster.bootstrap, tmp_path), cluster, ca)
    del env["IRIS_KAFKA_SSL_CA_FILE"]  # the system's CAs do not know the test CA
    published = run(env, "publish", "--count", "10")
    assert published.returncode != 0
    assert "IRIS_KAFKA_SSL_CA_FILE" in published.stderr and "not trust" in published.stderr, published.stderr
