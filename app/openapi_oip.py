"""The Open Inference Protocol v2 part of the OpenAPI document (:mod:`app.oip`)."""

from __future__ import annotations

from typing import Any

#: The v2 routes behind the API key when one is set (health and readiness stay open).
OIP_PROTECTED = (
    "/v2/models/{name}",
    "/v2/models/{name}/infer",
    "/v2/models/{name}/versions/{version}",
    "/v2/models/{name}/versions/{version}/infer",
)

_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": -1}},
        "datatype": {"type": "string", "examples": ["FP32", "FP64", "BYTES"]},
        "parameters": {"type": "object", "additionalProperties": True},
        "data": {"type": "array", "description": "Row-major values, flat or nested."},
    },
}
_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_ANY = {"type": "object", "additionalProperties": True}


def _path_params(model_name: str) -> dict[str, Any]:
    return {
        "name": {
            "name": "name",
            "in": "path",
            "required": True,
            "description": "The served model's registered name (another name is a 404).",
            "schema": {"type": "string", "examples": [model_name]},
        },
        "version": {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}},
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Bad request: one sentence naming the input, row or field.",
        401: "Missing or wrong API key (when IRIS_API_KEY is set).",
        404: "Not this model, or not the serving version (the message names the serving one).",
        413: "Body over IRIS_MAX_BODY_BYTES.",
        503: "No model loaded yet.",
    }
    return {str(s): _json({"$ref": "#/components/schemas/OipError"}, text[s]) for s in statuses}


def _get(
    summary: str, op: str, ok: str, *errors: int, params: tuple[str, ...] = (), model_name: str = ""
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "operationId": op,
        "tags": ["Open Inference Protocol v2"],
        "responses": {"200": _json(_ANY, ok), **_errors(*errors)},
    }
    if params:
        operation["parameters"] = [_path_params(model_name)[p] for p in params]
    return {"get": operation}


def _infer(op: str, params: tuple[str, ...], model_name: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": "Score one FP32/FP64 [n, 4] tensor, or four [n] tensors named after the features: "
            "outputs label (BYTES [n]) and probabilities (FP64 [n, 3]). Triton's binary tensor "
            "extension (Inference-Header-Content-Length) is read and written.",
            "operationId": op,
            "tags": ["Open Inference Protocol v2"],
            "parameters": [_path_params(model_name)[p] for p in params],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("OipRequest")}},
            },
            "responses": {
                "200": _json(_ref("OipResponse"), "Outputs, model name and version."),
                **_errors(400, 401, 404, 413, 503),
            },
        }
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def oip_schemas() -> dict[str, Any]:
    return {
        "OipError": _ERROR,
        "OipTensor": _TENSOR,
        "OipRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": _ANY,
                "inputs": {"type": "array", "minItems": 1, "items": _ref("OipTensor")},
                "outputs": {"type": "array", "items": {"type": "object", "required": ["name"]}},
            },
        },
        "OipResponse": {
            "type": "object",
            "required": ["model_name", "model_version", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": _ref("OipTensor")},
            },
        },
    }


def oip_paths(model_name: str) -> dict[str, Any]:
    name, both, m = ("name",), ("name", "version"), model_name
    return {
        "/v2": _get("Server metadata: name, version, extensions.", "v2_server", "Server metadata."),
        "/v2/health/live": _get("Liveness.", "v2_live", "Live."),
        "/v2/health/ready": _get("Readiness: 200 once a model is loaded.", "v2_ready", "Ready.", 503),
        "/v2/models/{name}": _get(
            "Model metadata.", "v2_model", "Model metadata.", 401, 404, 503, params=name, model_name=m
        ),
        "/v2/models/{name}/ready": _get(
            "Model readiness.", "v2_model_ready", "Ready.", 404, 503, params=name, model_name=m
        ),
        "/v2/models/{name}/infer": _infer("v2_infer", name, m),
        "/v2/models/{name}/versions/{version}": _get(
            "Model metadata of one version.",
            "v2_model_version",
            "Model metadata.",
            401,
            404,
            503,
            params=both,
            model_name=m,
        ),
        "/v2/models/{name}/versions/{version}/ready": _get(
            "Readiness of one version.",
            "v2_model_version_ready",
            "Ready.",
            404,
            503,
            params=both,
            model_name=m,
        ),
        "/v2/models/{name}/versions/{version}/infer": _infer("v2_infer_version", both, m),
    }
