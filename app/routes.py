"""HTTP handlers: decode → validate (:mod:`ml.schema`) → score (:class:`ml.predict.Scorer`, through
the micro-batcher) → encode. No model logic here."""

from __future__ import annotations

import hmac
import importlib.metadata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from app.batching import BatcherClosed, MicroBatcher
from app.encoding import JSON, charset, decode_json, json_response, media_type, read_body
from app.errors import ShuttingDown, UnsupportedMediaType
from app.inputs import csv_records, many_records, mlflow_records, one_record, parquet_records
from app.oip import HEADER_LENGTH, check_served, infer_response, model_metadata, parse_infer
from ml.errors import BadInputError, FeedbackUnavailable, Unauthorized, ValidationFailed
from ml.experiment import Agreement, Experiment, shadow_pair
from ml.feedback import check_feedback
from ml.messages import INVALID_JSON, TOO_LARGE, Rejected
from ml.metrics import Metrics
from ml.model import ModelHolder
from ml.predict import Scorer, Scores, prediction_records
from ml.reload import ModelWatcher
from ml.schema import one_row, to_matrix
from ml.settings import Settings

SOURCE = "rest"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
INVOCATION_TYPES = (JSON, CSV, PARQUET)
#: requests up to this many rows are scored on the event loop when the model has a NumPy form
#: (about 20 µs at 64 rows, 100 µs at 1,000); larger ones go to the micro-batcher's thread
INLINE_MAX_ROWS = 1024

Handler = Callable[[Request], Awaitable[Response]]


class FeedbackSink(Protocol):
    async def send(self, key: bytes, value: bytes) -> tuple[int, int]: ...


MLFLOW_VERSION = importlib.metadata.version("mlflow")
PACKAGE_VERSION = importlib.metadata.version("iris-scorer")


@dataclass
class AppState:
    """Everything the handlers use; the lifespan fills in ``watcher`` and starts ``batcher``."""

    settings: Settings
    holder: ModelHolder
    metrics: Metrics
    scorer: Scorer
    batcher: MicroBatcher
    #: champion and challenger (:mod:`ml.experiment`); canary requests go to ``canary_batcher``
    experiment: Experiment
    canary_batcher: MicroBatcher
    watcher: ModelWatcher | None = None
    api_key: bytes | None = field(default=None, repr=False)
    #: where ``POST /feedback`` publishes labels (the entry point's Kafka sink); None: 503
    feedback: FeedbackSink | None = None

    @classmethod
    def build(
        cls, settings: Settings, holder: ModelHolder, metrics: Metrics, challenger: ModelHolder | None = None
    ) -> AppState:
        experiment = Experiment(
            holder,
            challenger or ModelHolder(),
            shadow=settings.shadow,
            canary_percent=settings.canary_percent,
        )
        agreement = Agreement(metrics, settings.shadow_agreement_window)
        scorer = Scorer(holder, metrics)
        rival_scorer = Scorer(experiment.challenger, metrics)

        def answered(serving: Scorer) -> Any:
            def score_rest(matrix: Any) -> Scores:
                scores = serving.score(matrix, SOURCE)
                pair = shadow_pair(experiment, scores, matrix)  # shadow: recorded as metrics only
                if pair is not None:
                    agreement.record(pair)
                return scores

            return score_rest

        def batcher(fn: Any, serving: ModelHolder) -> MicroBatcher:
            def cheap(rows: int) -> bool:
                model = serving.model
                return rows <= INLINE_MAX_ROWS and model is not None and model.compiled is not None

            return MicroBatcher(
                fn,
                max_rows=settings.microbatch_max_size,
                max_wait_ms=settings.microbatch_max_wait_ms,
                inline=cheap,
            )

        key = settings.api_key.get_secret_value().encode() if settings.api_key is not None else None
        return cls(
            settings,
            holder,
            metrics,
            scorer,
            batcher(answered(scorer), holder),
            experiment,
            batcher(answered(rival_scorer), experiment.challenger),
            api_key=key,
        )


class Api:
    """The endpoints, bound to one :class:`AppState`."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.settings = state.settings

    def protected(self, handler: Handler) -> Handler:
        """``handler`` behind ``Authorization: Bearer <IRIS_API_KEY>`` when a key is set."""
        expected = self.state.api_key
        if expected is None:
            return handler

        async def guarded(request: Request) -> Response:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
                raise Unauthorized("missing or wrong API key: send Authorization: Bearer <key>.")
            return await handler(request)

        return guarded

    def _submit(self, matrix: Any, key: str | bytes | None = None) -> Awaitable[Scores]:
        """The batcher's future for ``matrix``, awaited by the handler itself: one coroutine frame
        fewer between the request's task and the future than an ``async`` helper (each frame is
        passed through twice, when the task suspends and when it resumes). A request whose
        ``key`` falls in the canary share goes to the challenger's batcher."""
        state = self.state
        state.holder.current  # noqa: B018 - fail fast with ModelNotReady, before queueing
        batcher = state.batcher
        if key is not None and state.experiment.canary(key) and state.experiment.challenger.ready:
            batcher = state.canary_batcher
        try:
            return batcher.enqueue(matrix)
        except BatcherClosed as exc:
            raise ShuttingDown(str(exc)) from None

    async def _score_matrix(self, matrix: Any, key: str | bytes | None = None) -> Scores:
        return await self._submit(matrix, key)

    def _canary_key(self, request_id: str | None, body: bytes | None) -> str | bytes | None:
        """What keeps a request on one model: its id, else its body (a retry sends the same bytes)."""
        if not self.state.experiment.threshold:
            return None
        return request_id if request_id is not None else body

    async def _json_body(self, request: Request) -> tuple[Any, bytes]:
        kind = media_type(request)
        if kind != JSON:
            raise UnsupportedMediaType(f"Content-Type must be {JSON}, got {kind}.")
        body = await read_body(request, self.settings.max_body_bytes)
        return decode_json(body), body

    async def predict(self, request: Request) -> Response:
        payload, body = await self._json_body(request)
        if isinstance(payload, dict) and "instances" in payload:
            records = many_records(payload["instances"], "instances", self.settings.max_instances)
            key = self._canary_key(records[0].id if records else None, body)
            scores = await self._score_matrix(to_matrix(records), key)
            return json_response(
                {
                    "predictions": prediction_records([r.id for r in records], scores, SOURCE),
                    "model_name": scores.model.name,
                    "model_version": scores.model.version,
                    "model_alias": scores.model.role,
                }
            )
        record = one_record(payload)  # the common case: one record, one row
        scores = await self._submit(one_row(record), self._canary_key(record.id, body))
        return json_response(prediction_records([record.id], scores, SOURCE)[0])

    async def invocations(self, request: Request) -> Response:
        """MLflow's scoring protocol: JSON, CSV or Parquet in, ``{"predictions": [...]}`` out."""
        kind, limit, cap = media_type(request), self.settings.max_body_bytes, self.settings.max_instances
        if kind not in INVOCATION_TYPES:
            raise UnsupportedMediaType(
                f"Content-Type must be one of {', '.join(INVOCATION_TYPES)}, got {kind}."
            )
        if charset(request) != "utf-8":
            raise UnsupportedMediaType(f"only UTF-8 bodies are read, got charset={charset(request)}.")
        body = await read_body(request, limit)
        if kind == CSV:
            records = csv_records(body, cap)
        elif kind == PARQUET:
            records = parquet_records(body, cap)
        else:
            records = mlflow_records(decode_json(body, nan_literals=True), cap)
        scores = await self._score_matrix(to_matrix(records), self._canary_key(None, body))
        return json_response({"predictions": scores.labels.tolist()})

    async def feedback(self, request: Request) -> Response:
        """A delayed label, ``{"id", "label", "labelled_at"}``: checked as the worker checks it,
        then published to the feedback topic (202 once the broker acknowledged it)."""
        kind = media_type(request)
        if kind != JSON:
            raise UnsupportedMediaType(f"Content-Type must be {JSON}, got {kind}.")
        body = await read_body(request, self.settings.max_body_bytes)
        item = check_feedback(body, self.settings.max_message_bytes)
        if isinstance(item, Rejected):
            if item.code in (INVALID_JSON, TOO_LARGE):
                raise BadInputError(f"feedback: {item.detail}.")
            raise ValidationFailed(f"feedback: {item.detail}.")
        if self.state.feedback is None:
            raise FeedbackUnavailable("labels are not accepted here: this service has no feedback topic.")
        partition, offset = await self.state.feedback.send(item.id.encode(), body)
        accepted = {"status": "accepted", "id": item.id, "topic": self.settings.feedback_topic}
        return json_response({**accepted, "partition": partition, "offset": offset}, 202)

    async def ping(self, request: Request) -> Response:
        """MLflow's health check: 200 once a model is loaded (what its client waits for)."""
        if self.state.holder.ready:
            return Response("\n", media_type="text/plain")
        return await self.ready(request)

    async def version(self, request: Request) -> Response:
        """MLflow's ``/version``: the MLflow version whose scoring protocol this serves (MLflow labels
        these bodies JSON although they are not; here they are text)."""
        return Response(MLFLOW_VERSION, media_type="text/plain")

    async def health(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        holder, watcher = self.state.holder, self.state.watcher
        if holder.ready:
            model = holder.current
            return json_response(
                {"status": "ready", "model_name": model.name, "model_version": model.version}
            )
        reason = (
            watcher.last_error if watcher else None
        ) or "no model is loaded yet: the registry is being polled."
        return json_response({"error": "model_not_ready", "detail": reason}, 503)

    async def model(self, request: Request) -> Response:
        return json_response(self.state.holder.current.describe())

    async def metrics(self, request: Request) -> Response:
        return Response(self.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    # Open Inference Protocol v2 (app/oip.py): KServe, Triton and MLServer clients
    async def v2_server(self, request: Request) -> Response:
        return json_response(
            {"name": "iris-scorer", "version": PACKAGE_VERSION, "extensions": ["binary_tensor_data"]}
        )

    async def v2_live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def v2_ready(self, request: Request) -> Response:
        ready = self.state.holder.ready
        return json_response({"ready": ready}, 200 if ready else 503)

    def _served(self, request: Request) -> Any:
        model = self.state.holder.current  # 503 until a model is loaded
        check_served(model, request.path_params["name"], request.path_params.get("version"))
        return model

    async def v2_model(self, request: Request) -> Response:
        return json_response(model_metadata(self._served(request)))

    async def v2_model_ready(self, request: Request) -> Response:
        name = request.path_params["name"]
        if not self.state.holder.ready:
            return json_response({"name": name, "ready": False}, 503)
        self._served(request)
        return json_response({"name": name, "ready": True})

    async def v2_infer(self, request: Request) -> Response:
        self._served(request)
        body = await read_body(request, self.settings.max_body_bytes)
        inference = parse_infer(body, request.headers.get(HEADER_LENGTH))
        key = self._canary_key(inference.request.get("id"), body)
        content, header_length = infer_response(inference, await self._score_matrix(inference.matrix, key))
        if header_length is None:
            return Response(content, media_type=JSON)
        return Response(
            content,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(header_length)},
        )
