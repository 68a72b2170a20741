"""``GET /docs``: Swagger UI over ``/openapi.json``, from the assets shipped in the
``swagger-ui-py`` wheel (Swagger UI 5, which reads OpenAPI 3.1). No CDN: the page loads only
from this server, so it renders where the service has no internet."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

from app.encoding import json_response

#: The only files served under /docs/assets/ (the bundle and its stylesheet).
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>iris-scorer API</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});
  </script>
</body>
</html>
"""


def asset_dir() -> Path | None:
    """Where the wheel keeps Swagger UI's files (found without importing the package)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "static"


async def docs_page(request: Request) -> Response:
    return HTMLResponse(PAGE)


async def docs_asset(request: Request) -> Response:
    name, folder = request.path_params["name"], asset_dir()
    if name not in ASSETS or folder is None or not (folder / name).is_file():
        return json_response({"error": "not_found", "detail": f"no documentation asset {name!r}"}, 404)
    return FileResponse(folder / name, media_type=ASSETS[name], headers={"Cache-Control": "max-age=86400"})
