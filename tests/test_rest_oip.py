"""Open Inference Protocol v2 over REST, checked with Triton's own client (issue 16, points 7-8).

``tritonclient[http]`` (NVIDIA's, from PyPI) talks to a running ``iris-scorer serve``: health,
server and model metadata, model readiness, and inference with its defaults (binary tensors in
and out) and with JSON tensors. The request examples of the KServe and Open Inference Protocol
documentation are sent as written there, with only the model name and shapes made ours.
Expected predictions come from the registered model itself (``mlflow.sklearn``), not from us.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import mlflow
import numpy as np
import pytest
import tritonclient.http as triton
from test_rest_mlflow_parity import _start
from test_rest_serve import free_port
from tritonclient.utils import InferenceServerException

from ml.schema import FEATURES

pytestmark = [pytest.mark.slow, pytest.mark.integration]

NAME = "iris-classifier"
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]], dtype=np.float32)


@pytest.fixture(scope="module")
def server(registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    logs = tmp_path_factory.mktemp("oip")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRIS_")}
    env["MLFLOW_TRACKING_URI"] = registry.tracking_uri
    port = free_port()
    proc = _start(
        [sys.executable, "-m", "iris_scorer.cli", "serve", "--port", str(port)], env, logs / "ours.log", port
    )
    client = triton.InferenceServerClient(f"127.0.0.1:{port}")
    deadline = time.monotonic() + 60
    while not client.is_server_ready():  # 503 until the champion is loaded
        assert time.monotonic() < deadline and proc.poll() is None, (logs / "ours.log").read_text()[-2000:]
        time.sleep(0.2)
    mlflow.set_tracking_uri(registry.tracking_uri)
    model = mlflow.sklearn.load_model(f"models:/{NAME}/{registry.champion_version}")
    try:
        yield {
            "url": f"127.0.0.1:{port}",
            "version": registry.champion_version,
            "model": model,
            "client": client,
        }
    finally:
        proc.terminate()
        proc.wait(15)


def _expected(model: Any, rows: np.ndarray) -> tuple[list[str], np.ndarray]:
    frame = __import__("pandas").DataFrame(rows.astype(np.float64), columns=list(FEATURES))
    probabilities = model.predict_proba(frame)
    return [str(c) for c in model.classes_[probabilities.argmax(axis=1)]], probabilities


def test_health_and_metadata_through_tritons_client(server: dict[str, Any]) -> None:
    client, version = server["client"], server["version"]
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(NAME)
    assert client.is_model_ready(NAME, version)
    assert not client.is_model_ready("resnet50")
    meta = client.get_server_metadata()
    assert meta["name"] == "iris-scorer" and "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata(NAME)
    assert model["name"] == NAME and model["versions"] == [version]
    assert {o["name"]: (o["datatype"], o["shape"]) for o in model["outputs"]} == {
        "label": ("BYTES", [-1]),
        "probabilities": ("FP64", [-1, 3]),
    }
    assert client.get_model_metadata(NAME, version) == model


def test_infer_with_the_clients_defaults_binary_tensors_in_and_out(server: dict[str, Any]) -> None:
    tensor = triton.InferInput("features", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS)  # binary_data=True: Triton's binary tensor extension
    result = server["client"].infer(NAME, [tensor])
    labels, probabilities = _expected(server["model"], ROWS)
    assert [x.decode() for x in result.as_numpy("label")] == labels
    assert result.as_numpy("probabilities").dtype == np.float64
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, rtol=1e-6)
    response = result.get_response()
    assert response["model_name"] == NAME and response["model_version"] == server["version"]


def test_infer_with_json_tensors_and_requested_outputs(server: dict[str, Any]) -> None:
    rows = ROWS.astype(np.float64)
    tensor = triton.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows, binary_data=False)
    outputs = [triton.InferRequestedOutput("label", binary_data=False)]
    result = server["client"].infer(
        NAME, [tensor], outputs=outputs, request_id="r-1", model_version=server["version"]
    )
    response = result.get_response()
    assert response["id"] == "r-1"
    assert [o["name"] for o in response["outputs"]] == ["label"]
    assert response["outputs"][0]["data"] == _expected(server["model"], rows)[0]


def test_infer_with_four_named_feature_tensors(server: dict[str, Any]) -> None:
    inputs = []
    for i, name in enumerate(FEATURES):
        tensor = triton.InferInput(name, [len(ROWS)], "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(ROWS[:, i]))
        inputs.append(tensor)
    result = server["client"].infer(NAME, inputs[::-1])  # order does not matter: names do
    assert [x.decode() for x in result.as_numpy("label")] == _expected(server["model"], ROWS)[0]


@pytest.mark.parametrize(
    ("call", "status", "words"),
    [
        (lambda c, v: c.infer(NAME, [_json_input(ROWS)], model_version="999"), "404", "serving version is "),
        (lambda c, v: c.infer("resnet50", [_json_input(ROWS)]), "404", f"serves '{NAME}'"),
        (lambda c, v: c.get_model_metadata(NAME, "999"), "404", "serving version is"),
        (lambda c, v: c.infer(NAME, [_json_input(ROWS * 100)]), "400", "must be <= 100"),
        (lambda c, v: c.infer(NAME, [_json_input(ROWS[:, :3])]), "400", "shape must be [n, 4]"),
        (
            lambda c, v: c.infer(NAME, [_json_input(ROWS)], outputs=[triton.InferRequestedOutput("logits")]),
            "400",
            "unknown output",
        ),
    ],
    ids=[
        "other-version",
        "other-model",
        "metadata-of-other-version",
        "out-of-range",
        "wrong-shape",
        "bad-output",
    ],
)
def test_errors_have_the_protocols_shape_and_status(
    server: dict[str, Any], call: Any, status: str, words: str
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        call(server["client"], server["version"])
    assert caught.value.status() == status
    assert words in caught.value.message()
    if "serving version" in words:
        assert f"serving version is {server['version']}" in caught.value.message()


def _json_input(rows: np.ndarray) -> Any:
    tensor = triton.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(np.ascontiguousarray(rows), binary_data=False)
    return tensor


#: KServe's sklearn Iris v2 example (docs: "Deploy Scikit-learn models with InferenceService",
#: iris-input-v2.json): nested data, FP32 [2, 4].
KSERVE_EXAMPLE = {
    "inputs": [
        {
            "name": "input-0",
            "shape": [2, 4],
            "datatype": "FP32",
            "data": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]],
        }
    ]
}
#: The Open Inference Protocol's REST example ("Inference Request Examples"): an id, flat data,
#: one requested output.
OIP_EXAMPLE = {
    "id": "42",
    "inputs": [
        {
            "name": "input0",
            "shape": [2, 4],
            "datatype": "FP64",
            "data": [6.8, 2.8, 4.8, 1.4, 5.1, 3.5, 1.4, 0.2],
        }
    ],
    "outputs": [{"name": "probabilities"}],
}


def test_the_kserve_and_protocol_documentation_examples(server: dict[str, Any]) -> None:
    base = f"http://{server['url']}/v2/models/{NAME}"
    kserve = httpx.post(f"{base}/infer", content=json.dumps(KSERVE_EXAMPLE), timeout=10)
    assert kserve.status_code == 200, kserve.text
    body = kserve.json()
    assert body["model_name"] == NAME and body["model_version"] == server["version"]
    label = next(o for o in body["outputs"] if o["name"] == "label")
    rows = np.array(KSERVE_EXAMPLE["inputs"][0]["data"], dtype=np.float32)
    assert label == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [2],
        "data": _expected(server["model"], rows)[0],
    }
    oip = httpx.post(f"{base}/versions/{server['version']}/infer", json=OIP_EXAMPLE, timeout=10)
    assert oip.status_code == 200, oip.text
    out = oip.json()
    assert out["id"] == "42" and [o["name"] for o in out["outputs"]] == ["probabilities"]
    probabilities = out["outputs"][0]
    assert probabilities["shape"] == [2, 3] and probabilities["datatype"] == "FP64"
    expected = _expected(server["model"], np.array(OIP_EXAMPLE["inputs"][0]["data"]).reshape(2, 4))[1]
    np.testing.assert_allclose(np.array(probabilities["data"]).reshape(2, 3), expected, rtol=1e-9)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{", "not valid JSON"),
        (b'{"inputs": []}', "non-empty 'inputs'"),
        (
            json.dumps(
                {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, "a", 4]}]}
            ),
            "numbers only",
        ),
        (
            json.dumps(
                {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
            ),
            "holds 8 values, data has 4",
        ),
        (
            json.dumps(
                {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "INT8", "data": [1, 2, 3, 4]}]}
            ),
            "FP32 or FP64",
        ),
    ],
    ids=["bad-json", "no-inputs", "string-value", "short-data", "int-datatype"],
)
def test_bad_requests_are_400_with_one_error_sentence(server: dict[str, Any], body: Any, words: str) -> None:
    response = httpx.post(f"http://{server['url']}/v2/models/{NAME}/infer", content=body, timeout=10)
    assert response.status_code == 400
    assert list(response.json()) == ["error"] and words in response.json()["error"]
    unknown = httpx.get(f"http://{server['url']}/v2/nothing-here", timeout=10)
    assert unknown.status_code == 404 and list(unknown.json()) == ["error"]
