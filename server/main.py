"""Run the server with uvicorn (`colbert-onnx serve`, `python -m colbert_onnx.server`)."""

from __future__ import annotations

import logging

from .config import ServerConfig

# Seconds uvicorn waits for in-flight requests after SIGTERM/SIGINT before closing them.
GRACEFUL_SHUTDOWN_S = 30


def serve(config: ServerConfig, host: str = "127.0.0.1", port: int = 8080, log_level: str = "info") -> None:
    """Serve `config` on host:port until SIGINT/SIGTERM; in-flight requests finish first."""
    import uvicorn

    from .app import create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(config)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        workers=1,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        access_log=log_level == "debug",
    )
