"""Run the server with uvicorn (`colbert-onnx serve`, `python -m colbert_onnx.server`), draining on SIGTERM."""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI

from .config import ServerConfig

log = logging.getLogger("colbert_onnx.server")

# Seconds the server drains after SIGTERM/SIGINT (requests in flight finish, new ones get 503), then again
# the most uvicorn waits for open connections before closing them.
GRACEFUL_SHUTDOWN_S = 30
# Once nothing is in flight, the drain goes on answering 503 this long before the listener closes: a client whose
# request just got its 200 and reconnects at once gets a 503 to retry, not a connection reset unanswered
DRAIN_QUIET_S = 0.5


class GracefulServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM/SIGINT drains instead of closing the listening socket at once.

    Draining: new requests get 503 with Retry-After (a load balancer retries them elsewhere), the requests in
    flight run to the end; once none has been left for `quiet_s` (or after `drain_s`), uvicorn's own graceful
    shutdown runs and the process exits with status 0. A second signal skips the drain (uvicorn's handling: a
    second SIGINT forces).
    """

    def __init__(self, config: uvicorn.Config, drain, drain_s: float = GRACEFUL_SHUTDOWN_S,
                 quiet_s: float = DRAIN_QUIET_S) -> None:
        super().__init__(config)
        self.drain = drain
        self.drain_s = drain_s
        self.quiet_s = quiet_s
        self._drain_deadline: float | None = None
        self._idle_since: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_deadline is not None or self.should_exit:
            super().handle_exit(sig, frame)
            return
        log.info("%s: draining (%d requests in flight), new requests get 503", signal.Signals(sig).name,
                 self.drain.in_flight)
        self.drain.begin()
        self._drain_deadline = time.monotonic() + self.drain_s

    async def on_tick(self, counter: int) -> bool:
        if self._drain_deadline is not None and not self.should_exit:
            now = time.monotonic()
            if self.drain.in_flight:
                self._idle_since = None
            elif self._idle_since is None:
                self._idle_since = now
            if (self._idle_since is not None and now - self._idle_since >= self.quiet_s) or now > self._drain_deadline:
                self.should_exit = True
        return await super().on_tick(counter)


def make_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8080, log_level: str = "info") -> GracefulServer:
    """A GracefulServer for an app of `create_app` (its `state.drain` is what the signal drains)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        workers=1,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        access_log=log_level == "debug",
    )
    return GracefulServer(config, app.state.drain)


def serve(config: ServerConfig, host: str = "127.0.0.1", port: int = 8080, log_level: str = "info") -> None:
    """Serve `config` on host:port until SIGINT/SIGTERM; in-flight requests finish first, then exit 0."""
    from .app import create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    make_server(create_app(config), host, port, log_level).run()
