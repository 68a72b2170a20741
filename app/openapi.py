"""The OpenAPI 3.1 document, built from the shared schema's pydantic models (no hand-copied rules)."""

from __future__ import annotations

from typing import Any

from app.openapi_oip import OIP_PROTECTED, oip_paths, oip_schemas
from ml.model import parse_model_uri
from ml.schema import PredictionModel, RecordModel
from ml.settings import Settings

_REF = "#/components/schemas/{model}"
PROTECTED = ("/predict", "/invocations", "/feedback", "/model", *OIP_PROTECTED)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def _errors(*statuses: int, schema: str = "Error") -> dict[str, Any]:
    text = {
        400: "Invalid JSON or invalid records (MLflow's status); detail names the field (and index).",
        401: "Missing or wrong API key (when IRIS_API_KEY is set).",
        413: "Body over IRIS_MAX_BODY_BYTES.",
        415: "Content-Type (or its charset) not supported.",
        422: "Invalid JSON or invalid records; detail names the field (and index).",
        503: "No model loaded yet.",
    }
    return {str(s): _json(_ref(schema), text[s]) for s in statuses}


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in (RecordModel, PredictionModel):
        schema = model.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[str(schema.get("title", model.__name__))] = schema
    record, prediction = (
        _ref(str(RecordModel.model_config.get("title"))),
        _ref(str(PredictionModel.model_config.get("title"))),
    )
    schemas["Error"] = {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string", "examples": ["validation_error"]},
            "detail": {
                "description": "A sentence, or for validation errors a list of {loc, msg}.",
                "anyOf": [
                    {"type": "string"},
                    {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                                "msg": {"type": "string"},
                            },
                        },
                    },
                ],
            },
        },
    }
    schemas["BatchRequest"] = {
        "type": "object",
        "required": ["instances"],
        "properties": {"instances": {"type": "array", "minItems": 1, "items": record}},
    }
    schemas["BatchResponse"] = {
        "type": "object",
        "required": ["predictions", "model_name", "model_version", "model_alias"],
        "properties": {
            "predictions": {"type": "array", "items": prediction},
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "model_alias": {"type": "string", "description": "champion, or challenger (canary)"},
        },
    }
    schemas["MlflowRequest"] = {
        "description": "MLflow scoring-server input: exactly one of the four keys.",
        "type": "object",
        "minProperties": 1,
        "oneOf": [
            {"required": [key]} for key in ("dataframe_split", "dataframe_records", "instances", "inputs")
        ],
        "properties": {
            "dataframe_split": {
                "type": "object",
                "properties": {
                    "columns": {"type": "array", "items": {"type": "string"}},
                    "data": {"type": "array", "items": {"type": "array"}},
                },
            },
            "dataframe_records": {"type": "array", "items": record},
            "instances": {"type": "array", "items": {"anyOf": [record, {"type": "array"}]}},
            "inputs": {"anyOf": [{"type": "array"}, {"type": "object"}]},
        },
    }
    schemas["Feedback"] = {
        "type": "object",
        "required": ["id", "label"],
        "properties": {
            "id": {"type": "string", "minLength": 1, "maxLength": 128, "description": "the request's id"},
            "label": {"type": "string", "enum": ["setosa", "versicolor", "virginica"]},
            "labelled_at": {"type": "string", "description": "when the label was known (ISO 8601)"},
        },
    }
    schemas["FeedbackAccepted"] = {
        "type": "object",
        "required": ["status", "id", "topic", "partition", "offset"],
        "properties": {
            "status": {"const": "accepted"},
            "id": {"type": "string"},
            "topic": {"type": "string"},
            "partition": {"type": "integer"},
            "offset": {"type": "integer"},
        },
    }
    schemas["MlflowError"] = {
        "description": "MLflow's scoring-server error, with our error code and field detail kept.",
        "type": "object",
        "required": ["error_code", "message", "error", "detail"],
        "properties": {
            "error_code": {"type": "string", "examples": ["BAD_REQUEST", "REQUEST_LIMIT_EXCEEDED"]},
            "message": {"type": "string"},
            "error": {"type": "string", "examples": ["validation_error"]},
            "detail": schemas["Error"]["properties"]["detail"],
        },
    }
    schemas["MlflowResponse"] = {
        "type": "object",
        "properties": {"predictions": {"type": "array", "items": {"type": "string"}}},
    }
    return schemas | oip_schemas()


def openapi_document(settings: Settings, version: str = "0.1.0") -> dict[str, Any]:
    status = {"type": "object", "additionalProperties": True}
    paths: dict[str, Any] = {
        "/predict": {
            "post": {
                "summary": "Score one record, or a batch as {instances: [...]}.",
                "operationId": "predict",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            # anyOf: a body with "instances" is a batch, whatever else it holds.
                            "schema": {"anyOf": [_ref("BatchRequest"), _ref("IrisRecord")]}
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {"oneOf": [_ref("IrisPrediction"), _ref("BatchResponse")]}, "Prediction(s)."
                    ),
                    **_errors(401, 413, 415, 422, 503),
                },
            }
        },
        "/invocations": {
            "post": {
                "summary": "MLflow scoring-server compatible scoring (predicted labels); a `params` key is "
                "accepted and ignored (the model takes none).",
                "operationId": "invocations",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref("MlflowRequest")},
                        "text/csv": {"schema": {"type": "string", "minLength": 1}},
                        "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                "responses": {
                    "200": _json(_ref("MlflowResponse"), "Predicted labels."),
                    **_errors(400, 401, 413, 415, 503, schema="MlflowError"),
                },
            }
        },
        "/feedback": {
            "post": {
                "summary": "A delayed label for a scored request: published to the feedback topic, "
                "where the worker joins it with the prediction of that id (live accuracy).",
                "operationId": "feedback",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("Feedback")}},
                },
                "responses": {
                    "202": _json(_ref("FeedbackAccepted"), "Published; the broker acknowledged it."),
                    **_errors(400, 401, 413, 415, 422, 503),
                },
            }
        },
        "/health": {
            "get": {
                "summary": "Liveness.",
                "operationId": "health",
                "responses": {"200": _json(status, "Alive.")},
            }
        },
        "/ping": {
            "get": {
                "summary": "MLflow's health check: 200 once a model is loaded.",
                "operationId": "ping",
                "responses": {"200": _text("Ready (a newline)."), **_errors(503)},
            }
        },
        "/version": {
            "get": {
                "summary": "MLflow's /version: the MLflow version whose scoring protocol is served.",
                "operationId": "version",
                "responses": {"200": _text("The MLflow version, e.g. 3.17.2.")},
            }
        },
        "/ready": {
            "get": {
                "summary": "Readiness: 200 once a model is loaded.",
                "operationId": "ready",
                "responses": {"200": _json(status, "Ready."), **_errors(503)},
            }
        },
        "/model": {
            "get": {
                "summary": "The serving model: name, version, alias, run id, data hash.",
                "operationId": "model",
                "responses": {"200": _json(status, "Model description."), **_errors(401, 503)},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics.",
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document.",
                "operationId": "openapi",
                "responses": {"200": _json({"type": "object"}, "OpenAPI document.")},
            }
        },
        "/docs": {
            "get": {
                "summary": "This document in Swagger UI (assets served locally, no CDN).",
                "operationId": "docs",
                "responses": {"200": {"description": "HTML page.", "content": {"text/html": {}}}},
            }
        },
        "/docs/assets/{name}": {
            "get": {
                "summary": "Swagger UI's script and stylesheet, for /docs.",
                "operationId": "docs_asset",
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {"description": "The asset."},
                    "404": _json(_ref("Error"), "No such asset."),
                },
            }
        },
        **oip_paths(parse_model_uri(settings.model_uri)[0]),
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "iris-scorer", "version": version, "description": "Iris classifier REST service."},
        "paths": paths,
        "components": {"schemas": _schemas()},
    }
    if settings.api_key is not None:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path in PROTECTED:
            for operation in paths[path].values():
                operation["security"] = [{"bearer": []}]
    return document
