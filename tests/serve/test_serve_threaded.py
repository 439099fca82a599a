"""running_server: yields a live base URL, stops the server, and fails clearly when unhealthy."""

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from mammolens.errors import MammolensError
from mammolens.serve.threaded import running_server


def _app(status: int) -> FastAPI:
    app = FastAPI()

    @app.get("/healthz")
    def healthz():
        return JSONResponse({"ok": status == 200}, status_code=status)

    return app


def test_running_server_serves_and_stops():
    with running_server(_app(200), timeout=10) as base:
        assert httpx.get(f"{base}/healthz").json() == {"ok": True}
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{base}/healthz", timeout=1)


def test_unhealthy_server_is_a_clear_error():
    with pytest.raises(MammolensError, match="did not become healthy"):
        with running_server(_app(503), timeout=1.5):
            pass
