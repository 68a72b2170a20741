"""Bad input never gets a 500: a table of requests with the status, error code and field named."""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pydantic
import pytest
from sklearn.linear_model import LogisticRegression

from app.encoding import ClientGone, read_body
from app.server import create_app
from ml.data import load_raw
from ml.errors import PayloadTooLarge
from ml.logs import KeyValueFormatter
from ml.metrics import Metrics
from ml.model import LoadedModel, ModelHolder, ModelRef
from ml.schema import FEATURES
from ml.settings import Settings

with warnings.catch_warnings():  # starlette warns when httpx (not httpx2) backs its TestClient
    warnings.simplefilter("ignore")
    from starlette.requests import Request
    from starlette.testclient import TestClient

GOOD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
JSON = {"content-type": "application/json"}
MAX_INSTANCES = 5
MAX_BODY = 4096
SECRET = "s3cr3t-api-key-value"


@pytest.fixture(scope="module")
def tiny_model() -> LoadedModel:
    frame = load_raw()
    estimator = LogisticRegression(max_iter=500).fit(frame[list(FEATURES)].to_numpy(), frame["species"])
    return LoadedModel(
        ref=ModelRef(name="iris-classifier", version="7", alias="champion", run_id="r1"),
        uri="models:/iris-classifier@champion",
        estimator=estimator,
        classes=np.asarray([str(c) for c in estimator.classes_]),
    )


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"max_instances": MAX_INSTANCES, "max_body_bytes": MAX_BODY}
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture(scope="module")
def client(tiny_model: LoadedModel) -> Iterator[TestClient]:
    app = create_app(settings(), holder=ModelHolder(tiny_model), metrics=Metrics())
    with TestClient(app, raise_server_exceptions=True) as test_client:
        yield test_client


def rec(**changes: Any) -> dict[str, Any]:
    record = dict(GOOD)
    for key, value in changes.items():
        if value is ...:
            record.pop(key)
        else:
            record[key] = value
    return record


def body(value: Any) -> bytes:
    return orjson.dumps(value)


SPLIT_COLUMNS = list(FEATURES)

# (case id, path, raw body, headers, status, error code, a loc the detail must name or None)
CASES: list[tuple[str, str, bytes, dict[str, str], int, str, list[Any] | None]] = [
    # transport-level problems
    ("not json", "/predict", b"sepal_length=5", JSON, 422, "invalid_json", None),
    ("empty body", "/predict", b"", JSON, 422, "invalid_json", None),
    ("truncated json", "/predict", b'{"sepal_length": 5.1', JSON, 422, "invalid_json", None),
    ("NaN literal is not JSON", "/predict", b'{"sepal_length": NaN}', JSON, 422, "invalid_json", None),
    ("Infinity literal", "/predict", b'{"sepal_length": Infinity}', JSON, 422, "invalid_json", None),
    (
        "text/plain refused",
        "/predict",
        body(GOOD),
        {"content-type": "text/plain"},
        415,
        "unsupported_media_type",
        None,
    ),
    (
        "form refused",
        "/predict",
        b"a=1",
        {"content-type": "application/x-www-form-urlencoded"},
        415,
        "unsupported_media_type",
        None,
    ),
    (
        "csv only on /invocations",
        "/predict",
        b"a,b\n1,2\n",
        {"content-type": "text/csv"},
        415,
        "unsupported_media_type",
        None,
    ),
    # one record
    ("top-level array", "/predict", body([GOOD]), JSON, 422, "validation_error", []),
    ("top-level number", "/predict", b"42", JSON, 422, "validation_error", []),
    (
        "missing feature",
        "/predict",
        body(rec(petal_width=...)),
        JSON,
        422,
        "validation_error",
        ["petal_width"],
    ),
    (
        "string feature",
        "/predict",
        body(rec(sepal_length="5.1")),
        JSON,
        422,
        "validation_error",
        ["sepal_length"],
    ),
    (
        "boolean feature",
        "/predict",
        body(rec(sepal_width=True)),
        JSON,
        422,
        "validation_error",
        ["sepal_width"],
    ),
    (
        "null feature",
        "/predict",
        body(rec(petal_length=None)),
        JSON,
        422,
        "validation_error",
        ["petal_length"],
    ),
    (
        "negative feature",
        "/predict",
        body(rec(petal_width=-0.1)),
        JSON,
        422,
        "validation_error",
        ["petal_width"],
    ),
    (
        "above the documented maximum",
        "/predict",
        body(rec(sepal_length=1e6)),
        JSON,
        422,
        "validation_error",
        ["sepal_length"],
    ),
    (
        "object feature",
        "/predict",
        body(rec(sepal_length={"v": 1})),
        JSON,
        422,
        "validation_error",
        ["sepal_length"],
    ),
    ("id not a string", "/predict", body(rec(id=12)), JSON, 422, "validation_error", ["id"]),
    ("empty id", "/predict", body(rec(id="")), JSON, 422, "validation_error", ["id"]),
    ("id too long", "/predict", body(rec(id="x" * 129)), JSON, 422, "validation_error", ["id"]),
    ("sent_at not a string", "/predict", body(rec(sent_at=5)), JSON, 422, "validation_error", ["sent_at"]),
    # batches: the index comes first in loc
    (
        "instances not a list",
        "/predict",
        body({"instances": GOOD}),
        JSON,
        422,
        "validation_error",
        ["instances"],
    ),
    ("empty instances", "/predict", body({"instances": []}), JSON, 422, "validation_error", ["instances"]),
    (
        "too many instances",
        "/predict",
        body({"instances": [GOOD] * (MAX_INSTANCES + 1)}),
        JSON,
        422,
        "validation_error",
        ["instances"],
    ),
    (
        "bad second instance",
        "/predict",
        body({"instances": [GOOD, rec(sepal_width="x")]}),
        JSON,
        422,
        "validation_error",
        [1, "sepal_width"],
    ),
    (
        "null instance",
        "/predict",
        body({"instances": [GOOD, GOOD, None]}),
        JSON,
        422,
        "validation_error",
        [2],
    ),
    (
        "negative in batch",
        "/predict",
        body({"instances": [rec(petal_length=-1), GOOD]}),
        JSON,
        422,
        "validation_error",
        [0, "petal_length"],
    ),
    # /invocations (MLflow formats)
    ("no format key", "/invocations", body({"data": [[1, 2, 3, 4]]}), JSON, 400, "validation_error", []),
    (
        "two format keys",
        "/invocations",
        body({"instances": [GOOD], "inputs": [GOOD]}),
        JSON,
        400,
        "validation_error",
        [],
    ),
    (
        "split without columns",
        "/invocations",
        body({"dataframe_split": {"data": [[1, 2, 3, 4]]}}),
        JSON,
        400,
        "validation_error",
        ["dataframe_split", "columns"],
    ),
    (
        "split ragged row",
        "/invocations",
        body({"dataframe_split": {"columns": SPLIT_COLUMNS, "data": [[1, 2, 3]]}}),
        JSON,
        400,
        "validation_error",
        [0],
    ),
    (
        "split negative value",
        "/invocations",
        body({"dataframe_split": {"columns": SPLIT_COLUMNS, "data": [[1, 2, 3, 4], [1, -2, 3, 4]]}}),
        JSON,
        400,
        "validation_error",
        [1, "sepal_width"],
    ),
    (
        "records missing column",
        "/invocations",
        body({"dataframe_records": [rec(sepal_length=...)]}),
        JSON,
        400,
        "validation_error",
        [0, "sepal_length"],
    ),
    (
        "instances row of 3",
        "/invocations",
        body({"instances": [[1, 2, 3]]}),
        JSON,
        400,
        "validation_error",
        [0],
    ),
    ("inputs empty", "/invocations", body({"inputs": []}), JSON, 400, "validation_error", ["inputs"]),
    (
        "csv with a word",
        "/invocations",
        b"sepal_length,sepal_width,petal_length,petal_width\n5,3,x,1\n",
        {"content-type": "text/csv"},
        400,
        "validation_error",
        [0, "petal_length"],
    ),
    (
        "csv missing column",
        "/invocations",
        b"sepal_length,sepal_width,petal_length\n5,3,1\n",
        {"content-type": "text/csv"},
        400,
        "validation_error",
        [0, "petal_width"],
    ),
    (
        "xml refused",
        "/invocations",
        b"<a/>",
        {"content-type": "application/xml"},
        415,
        "unsupported_media_type",
        None,
    ),
    # size limits
    ("over max_body_bytes", "/predict", body({"instances": [GOOD] * 100}), JSON, 413, "too_large", None),
]


@pytest.mark.parametrize(
    ("path", "raw", "headers", "status", "code", "loc"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_bad_input_is_a_client_error_naming_the_field(
    client: TestClient,
    path: str,
    raw: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
    loc: list[Any] | None,
) -> None:
    response = client.post(path, content=raw, headers=headers)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["error"] == code
    assert payload["detail"]
    if loc is not None:
        locs = [item["loc"] for item in payload["detail"]]
        assert loc in locs, locs
        assert all(isinstance(item["msg"], str) and item["msg"] for item in payload["detail"])


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 20


def test_every_bad_field_of_a_record_is_listed(client: TestClient) -> None:
    response = client.post("/predict", json={"sepal_length": "a", "sepal_width": None, "petal_length": -1})
    assert response.status_code == 422
    fields = {item["loc"][0] for item in response.json()["detail"]}
    assert fields == {"sepal_length", "sepal_width", "petal_length", "petal_width"}


def test_rejected_input_is_counted(tiny_model: LoadedModel) -> None:
    metrics = Metrics()
    with TestClient(create_app(settings(), holder=ModelHolder(tiny_model), metrics=metrics)) as test_client:
        test_client.post("/predict", json=rec(sepal_length="x"))
    value = metrics.registry.get_sample_value(
        "iris_prediction_errors_total", {"source": "rest", "reason": "validation_error"}
    )
    assert value == 1


def test_missing_content_type_is_read_as_json(client: TestClient) -> None:
    response = client.post("/predict", content=body(GOOD))
    assert response.status_code == 200
    assert response.json()["label"] == "setosa"


def test_declared_content_length_over_the_limit_is_refused_before_reading(client: TestClient) -> None:
    response = client.post("/predict", content=b"{}", headers={**JSON, "content-length": str(MAX_BODY + 1)})
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


def test_chunked_body_without_content_length_is_cut_off(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"instances": ['
        for _ in range(200):
            yield body(GOOD) + b","
        yield body(GOOD) + b"]}"

    response = client.post("/predict", content=chunks(), headers=JSON)
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


def test_a_body_over_the_limit_is_drained_up_to_a_bound_then_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the limit nothing is kept; the rest is read and dropped (so a client sending it in
    one go gets the 413, not a reset), but no further than DRAIN_MAX_BYTES."""
    from app import encoding

    monkeypatch.setattr(encoding, "DRAIN_MAX_BYTES", 20_000)
    pulled = {"n": 0}

    async def receive() -> dict[str, Any]:
        pulled["n"] += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": pulled["n"] < 1000}

    async def run() -> None:
        request = Request({"type": "http", "method": "POST", "headers": [], "path": "/predict"}, receive)
        with pytest.raises(PayloadTooLarge):
            await read_body(request, 4096)

    asyncio.run(run())
    assert pulled["n"] == 21  # 5 kB over the limit, then drained to 20 kB (+1 chunk); 979 never pulled


def test_a_client_that_hangs_up_mid_body_is_not_a_server_error() -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def run() -> None:
        request = Request({"type": "http", "method": "POST", "headers": [], "path": "/predict"}, receive)
        with pytest.raises(ClientGone):
            await read_body(request, 4096)

    asyncio.run(run())


def test_no_model_is_503_not_500() -> None:
    app = create_app(settings(), holder=ModelHolder(), metrics=Metrics())
    with TestClient(app) as test_client:
        for path, payload in (("/predict", GOOD), ("/invocations", {"instances": [GOOD]})):
            response = test_client.post(path, json=payload)
            assert response.status_code == 503
            assert response.json()["error"] == "model_not_ready"
        assert test_client.get("/model").status_code == 503
        ready = test_client.get("/ready")
        assert ready.status_code == 503
        assert "no model" in ready.json()["detail"]
        assert test_client.get("/health").status_code == 200
        # the Open Inference Protocol's shape: {"error": "..."}, live but not ready
        assert test_client.get("/v2/health/live").status_code == 200
        assert test_client.get("/v2/health/ready").json() == {"ready": False}
        assert test_client.get("/v2/models/iris-classifier/ready").status_code == 503
        infer = test_client.post("/v2/models/iris-classifier/infer", json={"inputs": []})
        assert infer.status_code == 503 and list(infer.json()) == ["error"]


def test_unknown_route_and_method_use_the_error_shape(client: TestClient) -> None:
    assert client.get("/nope").json()["error"] == "not_found"
    response = client.get("/predict")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


# --- auth ---------------------------------------------------------------------------------


@pytest.fixture
def secured(tiny_model: LoadedModel) -> Iterator[TestClient]:
    app = create_app(settings(api_key=SECRET), holder=ModelHolder(tiny_model), metrics=Metrics())
    with TestClient(app) as test_client:
        yield test_client


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no header"),
        pytest.param({"authorization": "Bearer wrong"}, id="wrong key"),
        pytest.param({"authorization": SECRET}, id="no scheme"),
        pytest.param({"authorization": f"Basic {SECRET}"}, id="wrong scheme"),
        pytest.param({"authorization": f"Bearer {SECRET}x"}, id="key with suffix"),
    ],
)
def test_scoring_endpoints_need_the_key(secured: TestClient, headers: dict[str, str]) -> None:
    for method, path in (("POST", "/predict"), ("POST", "/invocations"), ("GET", "/model")):
        response = secured.request(method, path, json={"instances": [GOOD]}, headers=headers)
        assert response.status_code == 401, path
        assert response.json()["error"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
        assert SECRET not in response.text


def test_right_key_scores_and_probes_stay_open(secured: TestClient) -> None:
    auth = {"authorization": f"Bearer {SECRET}"}
    assert secured.post("/predict", json=GOOD, headers=auth).status_code == 200
    assert secured.post("/invocations", json={"instances": [GOOD]}, headers=auth).status_code == 200
    assert secured.get("/model", headers=auth).status_code == 200
    for path in ("/health", "/ready", "/metrics"):
        assert secured.get(path).status_code == 200, path


def test_the_key_never_reaches_the_logs(secured: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secured.post("/predict", json=GOOD, headers={"authorization": f"Bearer {SECRET}"})
    secured.post("/predict", json=GOOD, headers={"authorization": f"Bearer {SECRET}-wrong"})
    secured.get("/model", headers={"authorization": f"Bearer {SECRET}"})
    formatter = KeyValueFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert any("event=http_request" in line and "route=/predict" in line for line in lines)
    assert not [line for line in lines if SECRET in line]


def test_a_non_number_is_quoted_in_the_422(client: TestClient) -> None:
    response = client.post("/predict", json=rec(sepal_length="abc"))
    assert response.status_code == 422
    assert response.json()["detail"] == [{"loc": ["sepal_length"], "msg": "is not a number: 'abc'"}]
    csv = b"sepal_length,sepal_width,petal_length,petal_width\n5,3,abc,1\n"
    response = client.post("/invocations", content=csv, headers={"content-type": "text/csv"})
    assert response.status_code == 400  # MLflow's status on its route
    assert response.json()["detail"] == [{"loc": [0, "petal_length"], "msg": "is not a number: 'abc'"}]


def test_csv_ids_are_text(client: TestClient) -> None:
    csv = b"id,sepal_length,sepal_width,petal_length,petal_width\n42,5.1,3.5,1.4,0.2\n007,5,3,1,0.2\n"
    response = client.post("/invocations", content=csv, headers={"content-type": "text/csv"})
    assert response.status_code == 200, response.text
    assert "predictions" in response.json()


def test_csv_ids_keep_their_text_exactly() -> None:
    from app.inputs import csv_records

    csv = b"id,sepal_length,sepal_width,petal_length,petal_width\n42,5.1,3.5,1.4,0.2\n007,5,3,1,0.2\n"
    assert [r.id for r in csv_records(csv, 10)] == ["42", "007"]


@pytest.mark.parametrize(
    ("setting", "logged"),
    [
        (None, {415, 422}),  # the default: failed requests only
        ("errors", {415, 422}),
        ("all", {200, 415, 422}),
        ("true", {200, 415, 422}),
        ("off", set()),
        ("false", set()),
    ],
)
def test_the_access_log_setting_picks_which_requests_are_logged(
    tiny_model: LoadedModel, caplog: pytest.LogCaptureFixture, setting: str | None, logged: set[int]
) -> None:
    overrides = {} if setting is None else {"access_log": setting}
    app = create_app(settings(**overrides), holder=ModelHolder(tiny_model), metrics=Metrics())
    caplog.set_level(logging.INFO, logger="app.access")
    with TestClient(app) as test_client:
        assert test_client.post("/predict", json=GOOD).status_code == 200
        assert test_client.post("/predict", json=rec(sepal_length="abc")).status_code == 422
        assert (
            test_client.post("/predict", content=b"{}", headers={"content-type": "text/plain"}).status_code
            == 415
        )
    statuses = {
        record.__dict__["status"] for record in caplog.records if record.getMessage() == "http_request"
    }
    assert statuses == logged


def test_a_misspelt_access_log_setting_is_refused_naming_the_choices() -> None:
    with pytest.raises(pydantic.ValidationError, match="'all', 'errors' or 'off'"):
        settings(access_log="sometimes")


def test_a_body_in_many_messages_is_joined_and_the_last_message_over_the_limit_is_not_drained() -> None:
    messages = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": False},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)  # a third receive would fail: nothing waits for a disconnect

    async def run(limit: int) -> bytes:
        request = Request({"type": "http", "method": "POST", "headers": [], "path": "/predict"}, receive)
        return await read_body(request, limit)

    assert asyncio.run(run(4096)) == b"abcd"
    messages[:] = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd" * 4096, "more_body": False},
    ]
    with pytest.raises(PayloadTooLarge):
        asyncio.run(run(4096))
    assert messages == []


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"content-type", b"application/json")],
        [(b"content-type", b"Application/JSON; charset=utf-8"), (b"content-length", b"12")],
        [(b"content-type", b"text/csv"), (b"content-type", b"application/json")],  # first one wins
        [(b"content-length", b"7"), (b"x-other", b"\xe9")],  # latin-1, as Starlette decodes
    ],
)
def test_raw_header_reads_agree_with_starlettes_headers(headers: list[tuple[bytes, bytes]]) -> None:
    from starlette.requests import Request

    from app.encoding import header, media_type

    request = Request({"type": "http", "method": "POST", "path": "/", "headers": headers})
    for name in ("content-type", "content-length", "x-other", "absent"):
        assert header(request, name.encode()) == request.headers.get(name)
    expected = (request.headers.get("content-type") or "application/json").partition(";")[0]
    assert media_type(request) == expected.strip().lower()
