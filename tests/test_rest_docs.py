"""``GET /docs`` renders in headless Chromium (Debian's ``chromium``) from local assets only
(issue 16, point 9).

Chromium resolves no host but loopback (``--host-resolver-rules``), so a page that needed a CDN
would stay blank. The rendered DOM must list the API's operations; a screenshot is kept with the
test's files.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_rest_mlflow_parity import _start
from test_rest_serve import free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed: `make system-deps` installs Debian's chromium package")
    return found


def headless(url: str, workdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Chromium, headless, offline but for loopback, run until the page settles."""
    argv = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={workdir / 'chromium-profile'}",
        "--virtual-time-budget=15000",
        "--window-size=1280,2000",
        *extra,
        url,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=workdir)


@pytest.fixture(scope="module")
def docs_server(registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("docs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRIS_")}
    env["MLFLOW_TRACKING_URI"] = registry.tracking_uri
    port = free_port()
    proc = _start(
        [sys.executable, "-m", "iris_scorer.cli", "serve", "--port", str(port)], env, logs / "rest.log", port
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(15)


def test_the_page_and_its_assets_come_from_this_server(docs_server: str) -> None:
    page = httpx.get(f"{docs_server}/docs", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/docs/assets/") for s in sources), sources
    for source in sources:
        asset = httpx.get(f"{docs_server}{source}", timeout=10)
        assert asset.status_code == 200 and len(asset.content) > 10_000, source
    assert httpx.get(f"{docs_server}/docs/assets/..%2Fsecrets", timeout=10).status_code == 404
    assert httpx.get(f"{docs_server}/docs/assets/swagger-editor.js", timeout=10).status_code == 404


def test_swagger_ui_renders_every_operation_in_headless_chromium(docs_server: str, tmp_path: Path) -> None:
    dom = headless(f"{docs_server}/docs", tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "swagger-ui" in html and "opblock" in html, html[:2000]
    rendered = set(re.findall(r'data-path="([^"]+)"', html))
    spec = httpx.get(f"{docs_server}/openapi.json", timeout=10).json()
    assert set(spec["paths"]) <= rendered, set(spec["paths"]) - rendered
    assert "iris-scorer" in html and "3.1" in html  # title and the OpenAPI version badge
    shot = headless(f"{docs_server}/docs", tmp_path, f"--screenshot={tmp_path / 'docs.png'}")
    assert shot.returncode == 0 and (tmp_path / "docs.png").stat().st_size > 20_000, shot.stderr[-2000:]
