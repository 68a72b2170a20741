"""`/invocations` against MLflow's own scoring server and client (issue 16, points 1-6).

Our server (``iris-scorer serve``) and ``mlflow models serve --env-manager local`` run side by
side on the same registered model. MLflow's ``ScoringServerClient`` must find ours ready
(``/ping``) and score through it; one table sends every case to both servers: the same status
class, and for a 200 the same predictions. Errors on ``/invocations`` have MLflow's shape
(``error_code``, ``message``) with our field detail as an extra key; a body over the limit gets
its 413 even when the client sends it in one go.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.pyfunc.scoring_server.client import ScoringServerClient
from test_rest_serve import free_port

from ml.schema import FEATURES

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3], [5.0, 3.4, 1.5, 0.2]]
LIMIT = 200_000


def _start(argv: list[str], env: dict[str, str], log: Path, port: int) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"{argv[0]} did not answer /health:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def servers(registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """{"ours": url, "mlflow": url}, both serving the registry's champion."""
    logs = tmp_path_factory.mktemp("parity")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRIS_")}
    env |= {"MLFLOW_TRACKING_URI": registry.tracking_uri, "IRIS_MAX_BODY_BYTES": str(LIMIT)}
    # mlflow models serve execs `uvicorn` from PATH
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    ours_port, mlflow_port = free_port(), free_port()
    ours = _start(
        [sys.executable, "-m", "iris_scorer.cli", "serve", "--port", str(ours_port)],
        env,
        logs / "ours.log",
        ours_port,
    )
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    theirs = _start(
        [
            mlflow_bin,
            "models",
            "serve",
            "-m",
            f"models:/iris-classifier/{registry.champion_version}",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "-p",
            str(mlflow_port),
            "--workers",
            "1",
        ],
        env,
        logs / "mlflow.log",
        mlflow_port,
    )
    try:
        ScoringServerClient("127.0.0.1", ours_port).wait_server_ready(timeout=60, scoring_server_proc=ours)
        yield {"ours": f"http://127.0.0.1:{ours_port}", "mlflow": f"http://127.0.0.1:{mlflow_port}"}
    finally:
        for proc in (ours, theirs):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _frame(rows: list[list[float]] = ROWS) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(FEATURES))


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


JSON = "application/json"
RECORDS = [dict(zip(FEATURES, row, strict=True)) for row in ROWS]

#: name → (body, content type): sent unchanged to both servers.
CASES: dict[str, tuple[bytes, str]] = {
    "dataframe_split": (json.dumps({"dataframe_split": _frame().to_dict(orient="split")}).encode(), JSON),
    "dataframe_records": (json.dumps({"dataframe_records": RECORDS}).encode(), JSON),
    "instances": (json.dumps({"instances": RECORDS}).encode(), JSON),
    "inputs_columns": (json.dumps({"inputs": _frame().to_dict(orient="list")}).encode(), JSON),
    "inputs_one_row_scalars": (json.dumps({"inputs": RECORDS[1]}).encode(), JSON),
    "with_params": (
        json.dumps({"dataframe_split": _frame().to_dict(orient="split"), "params": {}}).encode(),
        JSON,
    ),
    "csv": (_frame().to_csv(index=False).encode(), "text/csv"),
    "csv_with_charset": (_frame().to_csv(index=False).encode(), "text/csv; charset=utf-8"),
    "parquet": (_parquet(_frame()), "application/vnd.apache.parquet"),
    "missing_column": (json.dumps({"dataframe_records": [{"sepal_length": 5.1}]}).encode(), JSON),
    "nan_value": (
        b'{"dataframe_split": {"columns": ["sepal_length", "sepal_width", "petal_length", '
        b'"petal_width"], "data": [[5.1, 3.5, NaN, 0.2]]}}',
        JSON,
    ),
    "not_json": (b'{"dataframe_split": ', JSON),
    "unsupported_type": (b"5.1,3.5,1.4,0.2", "text/plain"),
    "latin1_csv": (_frame().to_csv(index=False).encode(), "text/csv; charset=latin-1"),
}


def _post(url: str, body: bytes, content_type: str) -> requests.Response:
    return requests.post(f"{url}/invocations", data=body, headers={"Content-Type": content_type}, timeout=60)


@pytest.mark.parametrize("case", list(CASES))
def test_the_same_case_gets_the_same_answer_from_mlflow_and_from_us(
    servers: dict[str, str], case: str
) -> None:
    body, content_type = CASES[case]
    ours, theirs = _post(servers["ours"], body, content_type), _post(servers["mlflow"], body, content_type)
    print(f"\n{case}: ours {ours.status_code}, mlflow {theirs.status_code}", end="")
    assert ours.status_code // 100 == theirs.status_code // 100, (
        f"{case}: ours {ours.status_code} {ours.text[:300]} / mlflow {theirs.status_code} {theirs.text[:300]}"
    )
    if theirs.status_code == 200:
        assert ours.json()["predictions"] == theirs.json()["predictions"], case
    elif ours.status_code in (400, 413) or (ours.headers.get("content-type") or "").startswith(JSON):
        error = ours.json()
        assert set(error) >= {"error_code", "message"}, f"{case}: not MLflow's error shape: {error}"
        assert isinstance(error["message"], str) and error["message"]


def test_mlflows_client_finds_us_ready_and_scores_a_frame(servers: dict[str, str], registry: Any) -> None:
    port = int(servers["ours"].rsplit(":", 1)[1])
    client = ScoringServerClient("127.0.0.1", port)
    client.wait_server_ready(timeout=10)
    assert client.get_version()  # MLflow's client reads it as text
    ours = client.invoke(_frame()).get_predictions()
    theirs = ScoringServerClient("127.0.0.1", int(servers["mlflow"].rsplit(":", 1)[1])).invoke(_frame())
    assert ours.equals(theirs.get_predictions())


def test_a_nan_sent_by_mlflows_client_is_a_400_naming_the_field(servers: dict[str, str]) -> None:
    port = int(servers["ours"].rsplit(":", 1)[1])
    frame = _frame()
    frame.loc[2, "petal_width"] = np.nan
    with pytest.raises(Exception, match="error code 400") as failed:
        ScoringServerClient("127.0.0.1", port).invoke(frame)
    text = str(failed.value)
    assert "petal_width" in text and "invalid_json" not in text and "char " not in text, text
    error = json.loads(text.split("response: ", 1)[1].rstrip(")"))
    assert (
        error["error_code"] == "BAD_REQUEST" and error["message"] == "2.petal_width: must be a finite number"
    )


def test_no_row_cap_by_default_the_body_limit_guards(servers: dict[str, str]) -> None:
    rows = [ROWS[i % 4] for i in range(5000)]  # 5,000 rows, ~190 kB: under the 200 kB limit
    body = json.dumps({"dataframe_split": _frame(rows).to_dict(orient="split")}).encode()
    assert len(body) < LIMIT
    response = _post(servers["ours"], body, JSON)
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["predictions"]) == 5000


@pytest.mark.parametrize("size", [LIMIT + 1, 5 * 1024 * 1024])
def test_a_body_over_the_limit_sent_in_one_go_gets_its_413(servers: dict[str, str], size: int) -> None:
    """requests (MLflow's client's transport) sends the whole body before it reads: the 413 must
    arrive, not a connection reset."""
    body = b'{"instances": [' + b" " * (size - 17) + b"]}"
    response = _post(servers["ours"], body, JSON)
    assert response.status_code == 413
    error = response.json()
    assert error["error_code"] == "REQUEST_LIMIT_EXCEEDED" and str(LIMIT) in error["message"]
