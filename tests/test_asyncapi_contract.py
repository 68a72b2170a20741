"""The AsyncAPI contract against the worker (issue 16, points 24-26).

Messages generated from the committed document's request schema (its examples, then
``hypothesis-jsonschema`` over the schema itself) are all scored, none dead-lettered: a producer
that follows the contract is never refused. The document is also checked by the AsyncAPI
initiative's own ``@asyncapi/parser`` (npm), with its analytics off and no network.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from test_worker_handler import SETTINGS, Capture, deliver, tiny_model  # noqa: F401 - fixture
from test_worker_http import ASYNCAPI

from ml.model import LoadedModel

REPO = Path(__file__).resolve().parents[1]
PARSER_DIR = REPO / ".cache" / "asyncapi-parser"
PARSER_VERSION = "3.6.6"


def _request_schema() -> dict[str, Any]:
    document = json.loads(ASYNCAPI.read_text())
    (message,) = [
        m for name, m in document["components"]["messages"].items() if name.startswith("iris.requests:")
    ]
    return dict(document["components"]["schemas"][message["payload"]["$ref"].rsplit("/", 1)[1]])


def _encodable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):  # lone surrogates are not UTF-8: not a message
        return False
    return True


def _score(model: LoadedModel, messages: list[dict[str, Any]]) -> Capture:
    sink = Capture()
    asyncio.run(deliver(model, sink, [orjson.dumps(m) for m in messages]))
    return sink


def test_every_example_of_the_request_schema_is_scored(tiny_model: LoadedModel) -> None:  # noqa: F811
    schema = _request_schema()
    examples = list(schema["examples"])
    assert examples
    sink = _score(tiny_model, examples)
    assert len(sink.to(SETTINGS.predictions_topic)) == len(examples) and not sink.to(SETTINGS.dlq_topic)


@settings(
    max_examples=60,
    deadline=None,
    # hypothesis-jsonschema rejects drafts that miss the schema's patterns and lengths, and
    # _encodable the lone surrogates JSON cannot carry: some runs filter more than Hypothesis's
    # health check allows (seen once in CI), which says nothing about the messages tested
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
@given(data=st.data())
def test_messages_generated_from_the_request_schema_are_scored_not_dead_lettered(
    tiny_model: LoadedModel,  # noqa: F811
    data: st.DataObject,
) -> None:
    schema = _request_schema()
    schema.pop("examples", None)
    messages = data.draw(st.lists(from_schema(schema).filter(_encodable), min_size=1, max_size=8))
    sink = _score(tiny_model, messages)
    dead = [orjson.loads(r.value or b"null") for r in sink.to(SETTINGS.dlq_topic)]
    assert not dead, [dict(r.headers).get("error_detail") for r in sink.to(SETTINGS.dlq_topic)]
    assert len(sink.to(SETTINGS.predictions_topic)) == len(messages)


def _parser() -> Path:
    """``@asyncapi/parser`` pinned, installed once into a git-ignored cache with npm."""
    script = PARSER_DIR / "node_modules" / "@asyncapi" / "parser"
    if script.exists():
        return PARSER_DIR
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed: it fetches @asyncapi/parser")
    PARSER_DIR.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--silent", f"@asyncapi/parser@{PARSER_VERSION}"],
        cwd=PARSER_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return PARSER_DIR


CHECK = """
const { Parser, fromFile } = require('@asyncapi/parser');
(async () => {
  const parser = new Parser();
  const { document, diagnostics } = await fromFile(parser, process.argv[2]).parse();
  const problems = diagnostics.filter(d => d.severity <= 1);  // 0 error, 1 warning
  console.log(JSON.stringify({parsed: !!document, problems: problems.map(d => `${d.code}: ${d.message} at ${d.path.join('.')}`), all: diagnostics.length}));
})().catch(e => { console.error(e); process.exit(1); });
"""


@pytest.mark.slow  # the first run installs @asyncapi/parser with npm
def test_asyncapi_parser_finds_no_errors_or_warnings(tmp_path: Path) -> None:
    folder = _parser()
    (folder / "check.js").write_text(CHECK)
    env = {
        **os.environ,
        "ASYNCAPI_ANALYTICS": "false",  # analytics off
        "NODE_OPTIONS": "--dns-result-order=ipv4first",
        "HTTP_PROXY": "http://127.0.0.1:9",  # no network: any fetch would fail, not leak
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }
    done = subprocess.run(
        ["node", str(folder / "check.js"), str(ASYNCAPI)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["parsed"], result
    assert result["problems"] == [], "\n".join(result["problems"])
