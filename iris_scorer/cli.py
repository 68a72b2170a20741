"""``iris-scorer``: one command line for training, serving, streaming, backfill and the demo.

Exit codes: 0 success, 1 runtime failure, 2 usage or bad input. Errors are one sentence on stderr.
Heavy imports happen inside each command, so ``iris-scorer --help`` is instant.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any, TypeVar

import typer

from iris_scorer import batch_commands, process
from iris_scorer.settings_env import settings_from_env
from ml.errors import IrisError

app = typer.Typer(
    name="iris-scorer",
    help="Event-driven batch-and-stream scorer for the Iris classifier.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])

#: ``--bootstrap-servers`` of the commands that talk to Kafka (over IRIS_KAFKA_BOOTSTRAP_SERVERS).
BootstrapServers = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-servers",
        help="Kafka bootstrap address(es), comma-separated (default: IRIS_KAFKA_BOOTSTRAP_SERVERS).",
    ),
]


def _version(value: bool) -> None:
    if value:
        import importlib.metadata

        typer.echo(f"iris-scorer {importlib.metadata.version('iris-scorer')}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Event-driven batch-and-stream scorer for the Iris classifier."""


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def handles_errors(func: F) -> F:
    """Our errors become one sentence on stderr and their exit code; Ctrl-C exits 130."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except IrisError as exc:
            raise fail(exc.message, exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------- training and the registry


@app.command()
@handles_errors
def train(
    force: Annotated[
        bool, typer.Option(help="Re-run every stage even if DVC finds nothing changed.")
    ] = False,
) -> None:
    """Run the DVC training pipeline (prepare → train → evaluate → register)."""
    from ml.pipeline import has_champion, run_pipeline

    settings = settings_from_env()
    code = run_pipeline(settings, force=force)
    if code != 0:
        raise fail("the training pipeline failed (see the stage output above).", 1)
    if not force and not has_champion(settings):
        # The pipeline's outputs are up to date but the registry has no champion (e.g. a fresh
        # MLflow store): re-run so the model is logged and registered again.
        typer.echo("pipeline up to date but the registry has no champion: re-running all stages", err=True)
        if run_pipeline(settings, force=True) != 0:
            raise fail("the training pipeline failed (see the stage output above).", 1)


@app.command()
@handles_errors
def promote(
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="Model version to point the alias at.")
    ] = None,
    alias: Annotated[str, typer.Option(help="Alias to move (champion or challenger).")] = "champion",
    force: Annotated[
        bool, typer.Option("--force", help="Promote even a version that failed the quality gate.")
    ] = False,
    from_live: Annotated[
        bool,
        typer.Option("--from-live", help="Move @champion to @challenger if live labels say it is not worse."),
    ] = False,
    min_labelled: Annotated[
        int, typer.Option(min=1, help="--from-live: labelled ids both models must have scored.")
    ] = 200,
    margin: Annotated[
        float | None,
        typer.Option(
            min=0, max=1, help="--from-live: macro F1 the challenger may lose (IRIS_PROMOTE_F1_MARGIN)."
        ),
    ] = None,
) -> None:
    """Point an alias (default: champion) at a model version (one that passed the quality gate,
    unless --force); or, with --from-live, promote the challenger on live evidence."""
    from ml import tracking
    from ml.model import parse_model_uri
    from ml.register import promote as promote_version

    settings = settings_from_env()
    if from_live:
        if version is not None or alias != "champion":
            raise fail("--from-live moves @champion to the challenger: drop --version and --alias.")
        from iris_scorer.live_promotion import promote_from_live

        promote_from_live(settings, min_labelled, margin)
        return
    if version is None:
        raise fail("promote needs --version N (or --from-live).")
    name, _, _ = parse_model_uri(settings.model_uri)
    client = tracking.client(settings.mlflow_tracking_uri)
    previous = promote_version(client, name, str(version), alias, gate=not force)
    typer.echo(f"{name}@{alias}: v{previous or '-'} → v{version}")


@app.command()
@handles_errors
def rollback(alias: Annotated[str, typer.Option(help="Alias to move back.")] = "champion") -> None:
    """Move an alias back to the version it pointed at before its last move."""
    from ml import tracking
    from ml.model import parse_model_uri
    from ml.register import rollback as rollback_alias

    settings = settings_from_env()
    name, _, _ = parse_model_uri(settings.model_uri)
    client = tracking.client(settings.mlflow_tracking_uri)
    current, target = rollback_alias(client, name, alias)
    typer.echo(f"{name}@{alias}: v{current or '-'} → v{target}")


# ---------------------------------------------------------------- serving


@app.command()
@handles_errors
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
) -> None:
    """REST service: POST /predict, /invocations, /health, /ready, /model, /metrics."""
    from app.server import serve as serve_app
    from consumers.feedback_sink import KafkaFeedbackSink

    settings = settings_from_env()
    serve_app(
        settings,
        host=host,
        port=port,
        on_ready=process.resume_gc,
        settle_heap=process.settle_heap,
        feedback=KafkaFeedbackSink(settings),
    )


@app.command()
@handles_errors
def worker(
    http_port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port of /health, /ready, /metrics.")
    ] = 8001,
    http_host: Annotated[str, typer.Option(help="Interface of the worker's HTTP endpoints.")] = "127.0.0.1",
    bootstrap_servers: BootstrapServers = None,
) -> None:
    """Stream worker: iris.requests → score → iris.predictions, bad messages → DLQ, drift windows."""
    from consumers.worker import run_worker

    raise typer.Exit(
        run_worker(
            settings_from_env(bootstrap_servers=bootstrap_servers),
            http_host=http_host,
            http_port=http_port,
            on_ready=process.resume_gc,
            settle_heap=process.settle_heap,
        )
    )


@app.command()
@handles_errors
def broker(
    port: Annotated[
        int,
        typer.Option(
            min=0, max=65535, help="TCP port to listen on (0: any free port, printed in the ready line)."
        ),
    ] = 9092,
    partitions: Annotated[int, typer.Option(min=1, max=64, help="Partitions per topic.")] = 4,
) -> None:
    """Embedded Kafka-protocol broker for dev and tests (librdkafka mock cluster, in memory)."""
    from consumers.broker import run_broker
    from ml.settings import load_settings

    settings = load_settings()
    topics = (settings.requests_topic, settings.predictions_topic, settings.dlq_topic, settings.drift_topic)
    raise typer.Exit(run_broker(port=port, partitions=partitions, topics=topics))


# ---------------------------------------------------------------- traffic, backfill, drift, demo
# Each command body below is owned by its module's author; keep edits inside the function.


@app.command()
@handles_errors
def publish(
    count: Annotated[int, typer.Option(min=0, help="Valid messages to send.")] = 1000,
    rate: Annotated[float, typer.Option(min=0, help="Messages per second (0 = as fast as possible).")] = 0.0,
    shift: Annotated[
        float, typer.Option(help="Shift petal features by this many standard deviations.")
    ] = 0.0,
    bad: Annotated[int, typer.Option(min=0, help="Malformed messages to interleave.")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    labels: Annotated[
        float,
        typer.Option(min=0, max=1, help="Then publish the true species of this share to iris.feedback."),
    ] = 0.0,
    bootstrap_servers: BootstrapServers = None,
) -> None:
    """Sample traffic to iris.requests (Iris class distributions with noise), and labels."""
    from consumers.publish import run_publish

    raise typer.Exit(
        run_publish(
            settings_from_env(bootstrap_servers=bootstrap_servers),
            count=count,
            rate=rate,
            shift=shift,
            bad=bad,
            seed=seed,
            labels=labels,
        )
    )


app.command()(handles_errors(batch_commands.backfill))
app.command("drift-report")(handles_errors(batch_commands.drift_report))


@app.command()
@handles_errors
def demo() -> None:
    """The whole event flow on embedded defaults (what `make demo` runs)."""
    from iris_scorer.demo import run_demo

    raise typer.Exit(run_demo(settings_from_env()))


#: One-shot commands that end with ``os._exit`` once their output is flushed and closed. Tearing
#: down an interpreter that has loaded MLflow, SQLAlchemy, scikit-learn and pyarrow (and freeing a
#: large heap) takes 0.5-1 s of pure waiting, a fifth of a 1M-row backfill (bench/RESULTS.md).
FAST_EXIT_COMMANDS = frozenset({"backfill"})
#: Commands that start with the garbage collector paused and resume it once set up (iris_scorer.process).
FAST_START_COMMANDS = frozenset({"backfill", "serve", "worker"})
#: Long-running services, whose freed memory glibc keeps for the next batch (iris_scorer.process).
SERVICE_COMMANDS = frozenset({"serve", "worker"})


def main() -> None:
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    process.fail_fast_on_registry_outage()
    if command in FAST_START_COMMANDS:
        process.pause_gc()
    if command in SERVICE_COMMANDS:
        process.keep_freed_memory()
    try:
        app()
    except SystemExit as exc:
        if command in FAST_EXIT_COMMANDS:
            _fast_exit(exc.code)
        raise


def _fast_exit(code: object) -> None:
    import logging

    if isinstance(code, str):  # sys.exit("message"): printed, exit status 1
        print(code, file=sys.stderr)
    status = code if isinstance(code, int) else (0 if code is None else 1)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
