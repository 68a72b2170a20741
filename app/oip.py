"""The Open Inference Protocol v2 over REST (KServe, Triton and Seldon MLServer clients), in the
protocol's own shapes. Decoding and encoding only: rows go through the schema rules of
:mod:`ml.schema` and are scored by the same micro-batcher as ``/predict``.

Inputs: one FP32/FP64 tensor ``[n, 4]`` (features in :data:`~ml.schema.FEATURES` order, any
name), or four ``[n]`` tensors named after the features. JSON ``data`` may be flat (row-major) or
nested; Triton's binary tensor extension (``Inference-Header-Content-Length``) is read and, when
asked for, written. Outputs: ``label`` (BYTES ``[n]``) and ``probabilities`` (FP64 ``[n, 3]``,
columns in the model's class order). Errors are ``{"error": "..."}``. gRPC is not served.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from ml.errors import BadInputError
from ml.model import LoadedModel
from ml.predict import Scores
from ml.schema import FEATURES, check_columns, row_errors

HEADER_LENGTH = "inference-header-content-length"
FLOATS = {"FP32": "<f4", "FP64": "<f8"}
OUTPUTS = ("label", "probabilities")
TENSOR_NAME = "features"  # what the metadata advertises for the one-tensor form


class NotServed(BadInputError):
    """A model name or version this server does not serve."""

    code = "model_not_found"
    http_status = 404


class Inference:
    """One decoded infer request: the feature matrix and the outputs to return (name, binary)."""

    def __init__(
        self, matrix: npt.NDArray[np.float64], request: Mapping[str, Any], outputs: list[tuple[str, bool]]
    ) -> None:
        self.matrix, self.request, self.outputs = matrix, request, outputs


def _params(obj: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """An object's optional ``parameters``, which must be a JSON object."""
    value = obj.get("parameters")
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _bad(f"{where}: parameters must be an object, got {orjson.dumps(value).decode()[:40]}.")
    return value


def _bad(message: str) -> BadInputError:
    return BadInputError(message)


def check_served(model: LoadedModel, name: str, version: str | None = None) -> None:
    """404 unless ``name`` (and ``version``, if given) is the model serving now."""
    if name != model.name:
        raise NotServed(f"model '{name}' is not served here; this server serves '{model.name}'.")
    if version is not None and version != model.version:
        raise NotServed(
            f"version {version} of model '{name}' is not served; the serving version is {model.version}."
        )


def model_metadata(model: LoadedModel) -> dict[str, Any]:
    n_classes = len(model.classes)
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": "sklearn",
        "inputs": [{"name": TENSOR_NAME, "datatype": "FP64", "shape": [-1, len(FEATURES)]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, n_classes]},
        ],
        "parameters": {"feature_names": list(FEATURES), "classes": [str(c) for c in model.classes]},
    }


def parse_infer(body: bytes, header_length: str | None) -> Inference:
    """The request's JSON header (and binary tensors, if any) → validated feature matrix."""
    binary = b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise _bad(
                f"Inference-Header-Content-Length {header_length!r} does not fit a {len(body)}-byte body."
            )
        body, binary = body[: int(header_length)], body[int(header_length) :]
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"request body is not valid JSON: {exc}.") from None
    if (
        not isinstance(request, Mapping)
        or not isinstance(request.get("inputs"), list)
        or not request["inputs"]
    ):
        raise _bad("request must be a JSON object with a non-empty 'inputs' array.")
    if "id" in request and not isinstance(request["id"], str):
        raise _bad("id must be a string.")
    outputs = _requested(request)  # before scoring: a bad output list costs no model call
    tensors, offset = [], 0
    for index, tensor in enumerate(request["inputs"]):
        values, offset = _tensor_values(tensor, index, binary, offset)
        tensors.append((tensor, values))
    if offset != len(binary):
        raise _bad(f"{len(binary) - offset} bytes of binary data after the last input tensor.")
    matrix = _matrix(tensors)
    _validate(matrix, tensors)
    return Inference(matrix, request, outputs)


def _tensor_values(
    tensor: object, index: int, binary: bytes, offset: int
) -> tuple[npt.NDArray[np.float64], int]:
    if not isinstance(tensor, Mapping) or not isinstance(tensor.get("name"), str):
        raise _bad(f"inputs[{index}] must be an object with a name, shape, datatype and data.")
    name, shape, datatype = tensor["name"], tensor.get("shape"), tensor.get("datatype")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _bad(f"input '{name}': shape must be an array of non-negative integers, got {shape!r}.")
    if not isinstance(datatype, str) or datatype not in FLOATS:
        raise _bad(f"input '{name}': datatype must be FP32 or FP64, got {datatype!r}.")
    count = math.prod(shape)
    size = _params(tensor, f"input '{name}'").get("binary_data_size")
    if size is not None:
        if (
            not isinstance(size, int)
            or size != count * int(FLOATS[datatype][-1])
            or offset + size > len(binary)
        ):
            raise _bad(
                f"input '{name}': binary_data_size {size!r} does not match shape {shape} of {datatype}."
            )
        values = np.frombuffer(binary, dtype=FLOATS[datatype], count=count, offset=offset)
        return values.astype(np.float64), offset + size
    if "data" not in tensor:
        raise _bad(f"input '{name}' has no data.")
    flat: list[float] = []
    _flatten(tensor["data"], name, flat)
    if len(flat) != count:
        raise _bad(f"input '{name}': shape {shape} holds {count} values, data has {len(flat)}.")
    return np.asarray(flat, dtype=np.float64), offset


def _flatten(data: object, name: str, into: list[float]) -> None:
    """Row-major values of flat or nested JSON ``data``; anything but a number is refused."""
    if isinstance(data, list):
        for item in data:
            if isinstance(item, list):
                _flatten(item, name, into)
            elif isinstance(item, int | float) and not isinstance(item, bool):
                into.append(float(item))
            else:
                raise _bad(
                    f"input '{name}': data must hold numbers only, got {orjson.dumps(item).decode()[:40]}."
                )
        return
    raise _bad(f"input '{name}': data must be an array of numbers.")


def _matrix(tensors: Sequence[tuple[Mapping[str, Any], npt.NDArray[np.float64]]]) -> npt.NDArray[np.float64]:
    width = len(FEATURES)
    if len(tensors) == 1:
        tensor, values = tensors[0]
        shape = tensor["shape"]
        if len(shape) != 2 or shape[1] != width:
            raise _bad(
                f"input '{tensor['name']}': shape must be [n, {width}] ({', '.join(FEATURES)}), got {shape}."
            )
        return values.reshape(shape[0], width)
    names = [t["name"] for t, _ in tensors]
    if sorted(names) != sorted(FEATURES):
        raise _bad(
            f"inputs must be one [n, {width}] tensor or {width} [n] tensors named {', '.join(FEATURES)}; got {names}."
        )
    columns = {t["name"]: v for t, v in tensors}
    rows = {len(v) for v in columns.values()}
    shapes = [t["shape"] for t, _ in tensors]
    if len(rows) != 1 or any(len(s) not in (1, 2) or (len(s) == 2 and s[1] != 1) for s in shapes):
        raise _bad(f"the {width} feature tensors must each have shape [n] with the same n; got {shapes}.")
    return np.column_stack([columns[f] for f in FEATURES])


def _validate(matrix: npt.NDArray[np.float64], tensors: Sequence[Any]) -> None:
    if matrix.shape[0] == 0:
        raise _bad("inputs hold no rows.")
    _, valid = check_columns({f: matrix[:, i] for i, f in enumerate(FEATURES)})
    bad = np.flatnonzero(~valid)
    if bad.size:
        shown = [f"row {int(r)}: {'; '.join(e.describe() for e in row_errors(matrix[r]))}" for r in bad[:5]]
        more = f"; and {bad.size - 5} more rows" if bad.size > 5 else ""
        raise _bad(f"{bad.size} invalid row(s): {'; '.join(shown)}{more}.")


def _requested(request: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """The outputs to return, each with whether it is binary (Triton's extension)."""
    default_binary = bool(_params(request, "request").get("binary_data_output", False))
    wanted = request.get("outputs")
    if wanted is None or wanted == []:  # none asked for: all of them
        return [(name, default_binary) for name in OUTPUTS]
    if not isinstance(wanted, list) or not all(
        isinstance(o, Mapping) and isinstance(o.get("name"), str) for o in wanted
    ):
        raise _bad("outputs must be an array of objects with a name.")
    unknown = [o["name"] for o in wanted if o["name"] not in OUTPUTS]
    if unknown:
        raise _bad(f"unknown output(s) {unknown}: this model has {', '.join(OUTPUTS)}.")
    return [
        (o["name"], bool(_params(o, f"output '{o['name']}'").get("binary_data", default_binary)))
        for o in wanted
    ]


def infer_response(inference: Inference, scores: Scores) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary tensors follow it."""
    outputs, blobs = [], []
    n = len(scores)
    for name, binary in inference.outputs:
        if name == "label":
            labels = [str(x) for x in scores.labels]
            tensor: dict[str, Any] = {"name": name, "datatype": "BYTES", "shape": [n]}
            if binary:
                encoded = [s.encode() for s in labels]
                blobs.append(b"".join(struct.pack("<I", len(e)) + e for e in encoded))
            else:
                tensor["data"] = labels
        else:
            probabilities = np.ascontiguousarray(scores.probabilities, dtype="<f8")
            tensor = {"name": name, "datatype": "FP64", "shape": list(probabilities.shape)}
            if binary:
                blobs.append(probabilities.tobytes())
            else:
                tensor["data"] = probabilities.ravel().tolist()
        if binary:
            tensor["parameters"] = {"binary_data_size": len(blobs[-1])}
        outputs.append(tensor)
    response: dict[str, Any] = {"model_name": scores.model.name, "model_version": scores.model.version}
    if "id" in inference.request:
        response["id"] = inference.request["id"]
    response["outputs"] = outputs
    header = orjson.dumps(response)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
