"""The Open Inference Protocol decoder on malformed requests: always a 400 naming what is wrong,
never a 500 (schemathesis found ``"parameters": [null, null]`` raising AttributeError)."""

from __future__ import annotations

import json

import pytest

from app.oip import parse_infer
from ml.errors import BadInputError

GOOD = {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}


@pytest.mark.parametrize(
    ("request_body", "words"),
    [
        ({"inputs": [{**GOOD, "parameters": [None, None]}]}, "parameters must be an object"),
        ({"parameters": [1], "inputs": [GOOD]}, "parameters must be an object"),
        (
            {"inputs": [GOOD], "outputs": [{"name": "label", "parameters": "yes"}]},
            "parameters must be an object",
        ),
        ({"inputs": [{**GOOD, "shape": [], "data": [None, None]}]}, "numbers only"),
        ({"inputs": [{**GOOD, "parameters": {"binary_data_size": 16}}]}, "binary_data_size"),
        ({"inputs": [{**GOOD, "data": [[1, 2], [3, [4, [5]]]]}]}, "holds 4 values, data has 5"),
        ({"inputs": [{**GOOD, "shape": [10**9, 10**9]}]}, "holds"),
        ({"inputs": [GOOD], "outputs": "label"}, "outputs must be an array"),
        ({"id": 7, "inputs": [GOOD]}, "id must be a string"),
        ({"inputs": [{**GOOD, "datatype": {}}]}, "FP32 or FP64"),
        ({"inputs": [{**GOOD, "shape": [1, 4.0]}]}, "shape must be"),
        ({"inputs": [GOOD, {**GOOD, "name": "y"}]}, "one [n, 4] tensor or 4"),
    ],
    ids=[
        "input-params-list",
        "request-params-list",
        "output-params-str",
        "nulls",
        "binary-size",
        "ragged",
        "huge-shape",
        "outputs-str",
        "id-number",
        "datatype-object",
        "float-shape",
        "two-tensors",
    ],
)
def test_malformed_requests_are_400_with_a_sentence(request_body: dict[str, object], words: str) -> None:
    with pytest.raises(BadInputError, match=words.replace("[", r"\[")) as caught:
        parse_infer(json.dumps(request_body).encode(), None)
    assert caught.value.http_status == 400
