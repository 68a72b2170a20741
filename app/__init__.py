"""Starlette REST adapter over :mod:`ml`: decode → validate (``ml.schema``) → score
(``ml.predict.Scorer`` through the ``app.batching`` micro-batcher) → encode.

Modules: ``server`` (``create_app``, ``serve``), ``routes`` (handlers), ``inputs`` (payload
formats), ``encoding`` (bounded body reader, orjson), ``errors`` (the one error renderer),
``middleware`` (HTTP metrics and access log), ``openapi`` (the OpenAPI document).

Content types: ``/predict`` reads JSON; ``/invocations`` reads JSON or ``text/csv`` (like MLflow's
scoring server). A missing ``Content-Type`` is read as JSON; any other type is refused with
415 ``unsupported_media_type`` (not 422: the body may be fine, the declared format is not).
"""
