"""The operator console: static pages (HTML, vanilla JS, CSS; no build step) shipped as
package data in gateway/console/ and served by the gateway at ``/console``. The pages call
the same /v1 API with the operator's credential, so they get no powers of their own."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

MOUNT = "/console"
# A second line behind rendering data as text only: no script, style or frame but the
# console's own files, no inline script, and no credential-bearing URL in a Referer.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class ConsoleFiles(StaticFiles):
    """StaticFiles whose every file goes out with SECURITY_HEADERS."""

    def file_response(self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(SECURITY_HEADERS)
        return response


def console_dir() -> Path:
    return Path(str(files("agentstream.gateway") / "console"))


def mount(app: FastAPI) -> None:
    """Serve the console at ``/console/`` (index.html for the directory itself)."""
    app.mount(MOUNT, ConsoleFiles(directory=console_dir(), html=True), name="console")
