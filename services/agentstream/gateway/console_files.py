"""The operator console: static pages (HTML, vanilla JS, CSS; no build step) shipped as
package data in gateway/console/ and served by the gateway at ``/console``. The pages call
the same /v1 API with the operator's credential, so they get no powers of their own."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

MOUNT = "/console"


def console_dir() -> Path:
    return Path(str(files("agentstream.gateway") / "console"))


def mount(app: FastAPI) -> None:
    """Serve the console at ``/console/`` (index.html for the directory itself)."""
    app.mount(MOUNT, StaticFiles(directory=console_dir(), html=True), name="console")
