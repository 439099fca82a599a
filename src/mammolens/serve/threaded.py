"""Run the service's app in a background thread (tests, benchmarks, embedding)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from mammolens.errors import MammolensError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def running_server(app, *, host: str = "127.0.0.1", port: int | None = None, timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a daemon thread; yield its base URL once ``/healthz`` answers.

    Raises :class:`MammolensError` if the server is not healthy within ``timeout`` seconds.
    The server is stopped when the block exits.
    """
    import httpx
    import uvicorn

    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True, name=f"mammolens-serve-{port}")
    thread.start()
    base = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise MammolensError(f"the service did not become healthy at {base} within {timeout:g} s")
            time.sleep(0.1)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout)
