"""`colbert-onnx serve` arguments and their mapping to ServerConfig (argparse only, no web imports)."""

from __future__ import annotations

import argparse
import sys

from ..config import add_encoder_arguments, encoder_config_from_args
from .config import API_KEY_ENV, SERVED_MODEL_NAME_ENV, ServerConfig


def port_number(text: str) -> int:
    """A TCP port, 1-65535 (argparse type): the socket layer would bind 99999 as 34463 and report 99999."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1-65535")
    return port


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the serve options on `p`: the encoder's (declared once, in colbert_onnx.config) and the server's."""
    d = ServerConfig(model_dir=".")
    p.add_argument("model_dir", help="folder written by `colbert-onnx export`")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port_number, default=8080, help="TCP port, 1-65535 (default 8080)")
    add_encoder_arguments(p)
    p.add_argument(
        "--served-model-name",
        nargs="+",
        default=None,
        metavar="NAME",
        help="names requests may use, each echoed back, all listed in /v1/models, e.g. jina-colbert-v2 "
        f"jina-reranker-v3 (or {SERVED_MODEL_NAME_ENV}=a,b; default: the manifest's, jina-colbert-v2)",
    )
    p.add_argument("--model-name", default=None, help="one served name: alias of --served-model-name NAME")
    p.add_argument("--dims", default=None, help="comma-separated heads to serve, e.g. 128,64 (default: all)")
    p.add_argument("--api-key", default=None, help=f"require 'Authorization: Bearer KEY' (or set {API_KEY_ENV})")
    p.add_argument("--max-inputs", type=int, default=d.max_inputs_per_request, help="texts per request")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help="request body size")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens_per_request, help="tokens per request")
    p.add_argument("--max-batch-texts", type=int, default=d.max_batch_texts, help="texts merged into one run")
    p.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms, help="wait for more requests to batch")
    p.add_argument("--max-queue", type=int, default=d.max_queue, help="waiting requests per queue before 429")
    p.add_argument(
        "--inference-workers", type=int, default=d.inference_workers, help="ONNX runs in parallel (threads)"
    )
    p.add_argument(
        "--muvera",
        default=d.muvera,
        metavar="SPEC",
        help="MUVERA parameters of embedding_type=muvera (muvera or muvera:k_sim=5,dim_proj=16,r_reps=20,seed=42)",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """ServerConfig from parsed serve arguments (API key and served names: flag, else environment)."""
    dims = tuple(int(x) for x in args.dims.split(",") if x.strip()) if args.dims else None
    if args.served_model_name is not None:
        served = tuple(args.served_model_name)  # ServerConfig splits commas and checks the names
    elif args.model_name is None:
        served = ServerConfig.served_model_names_from_env()
    else:
        served = ()
    return ServerConfig(
        model_dir=args.model_dir,
        encoder=encoder_config_from_args(args),
        model_name=args.model_name,
        served_model_names=served,
        dims=dims,
        api_key=args.api_key or ServerConfig.api_key_from_env(),
        max_inputs_per_request=args.max_inputs,
        max_body_bytes=args.max_body_bytes,
        max_tokens_per_request=args.max_tokens,
        max_batch_texts=args.max_batch_texts,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        inference_workers=args.inference_workers,
        muvera=args.muvera,
    )


def run_serve(args: argparse.Namespace) -> int:
    """Entry point of `colbert-onnx serve`: clear message when the [server] extra is missing."""
    try:
        import fastapi  # noqa: F401
        import orjson  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        print(
            f"colbert-onnx serve needs the [server] extra (pip install 'colbert-onnx[server]'): {exc}",
            file=sys.stderr,
        )
        return 2
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"colbert-onnx serve: error: {exc}", file=sys.stderr)
        return 2
    from .main import serve

    serve(config, host=args.host, port=args.port, log_level=args.log_level)
    return 0
