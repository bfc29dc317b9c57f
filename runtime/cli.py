"""`colbert-onnx` command line: export, encode, rerank, encode-parquet, verify, serve (export needs [export],
encode-parquet [arrow], serve [server])."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import add_encoder_arguments, encoder_config_from_args, encoder_settings_from_environment
from .errors import ColbertOnnxError, InvalidInputError, InvalidTextError
from .text import text_problem


def _read_lines(path: str) -> list[str]:
    """The lines of a UTF-8 file or of stdin ('-'), one text each, checked by the text rule (text.py).

    Bytes that are not UTF-8, or a line the rule refuses, are an InvalidTextError naming the line (exit 2):
    the input is never guessed at or silently changed beyond the rule's normalizations.
    """
    source = "stdin" if path == "-" else path
    if path == "-" and not hasattr(sys.stdin, "buffer"):  # a text stream (tests, embedding): already decoded
        lines = [line.rstrip("\n") for line in sys.stdin]
    else:
        try:
            data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        except OSError as exc:
            raise InvalidInputError(f"cannot read {source}: {exc.strerror or exc}") from None
        lines = [_decode_line(raw, source, number) for number, raw in enumerate(data.splitlines(), 1)]
    for number, line in enumerate(lines, 1):
        problem = text_problem(line)
        if problem is not None:
            raise InvalidTextError(f"{source} line {number}", None, problem)
    return lines


def _decode_line(raw: bytes, source: str, number: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = (
            f"is not UTF-8: byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} ({exc.reason}); convert the input "
            "to UTF-8 first, e.g. iconv -f LATIN1 -t UTF-8"
        )
        raise InvalidTextError(f"{source} line {number}", None, reason) from None


class _OutputError(ColbertOnnxError):
    """stdout cannot be written (a full disk, a closed file): exit status 1."""


def _fail(message: str) -> int:
    """The one-line error of every refusal: exit status 2."""
    print(f"colbert-onnx: error: {message}", file=sys.stderr)
    return 2


def _write(text: str, flush: bool = False) -> None:
    """`text` to stdout; a failure other than a closed pipe (main) is an _OutputError naming stdout."""
    try:
        sys.stdout.write(text)
        if flush:
            sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise _OutputError(f"cannot write to stdout: {exc.strerror or exc}") from None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an int") from None


def _positive_int(text: str) -> int:
    if _int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive int")
    return int(text)


def _decimals(text: str) -> int:
    if _int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1: the vectors are unit-length, so rounding to "
                                         "0 decimals or fewer prints almost every component as 0")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive, finite number")
    return value


def _encoder(args: argparse.Namespace):
    from .encoder import ColbertEncoder

    return ColbertEncoder(args.model_dir, encoder_config_from_args(args))


def cmd_export(args: argparse.Namespace) -> int:
    if args.private and not args.push_to_hub:
        raise InvalidInputError("--private applies with --push-to-hub (the repo it creates), which was not given")
    try:
        from colbert_onnx.export import ParityError, export_model
    except ImportError as exc:
        return _fail(f"export needs the [export] extra (pip install 'colbert-onnx[export]'): {exc}")

    try:
        out = export_model(
            args.sources,
            args.out,
            document_max_length=args.document_max_length,
            precisions=args.precision,
            int8_method=args.int8_method,
            parity_tolerance=args.parity_tolerance,
            accept_parity_miss=args.accept_parity_miss,
            engines=args.engines,
        )
    except ParityError as exc:  # the figures of every head, then the one-line error (main)
        print(json.dumps({"parity": {"fp32": exc.figures}}, indent=2), file=sys.stderr)
        raise
    from .manifest import read_manifest
    from .model_folder import engine_gate_verdicts, gate_verdicts, mixed_precision_summary

    manifest = read_manifest(out)
    report = {"out": str(out), "heads": list(manifest.heads), "parity": manifest.parity,
              "fidelity_gates_passed": gate_verdicts(manifest)}
    engine_verdicts = engine_gate_verdicts(manifest)
    if engine_verdicts:
        report["engine_graphs_passed"] = engine_verdicts
    for line in mixed_precision_summary(manifest):
        print(line, file=sys.stderr)
    if args.push_to_hub:
        from .hub import push_to_hub

        try:
            report["pushed"] = push_to_hub(out, args.push_to_hub, private=args.private)
        except ColbertOnnxError as exc:  # the folder is written: say so with the upload's failure
            raise ColbertOnnxError(f"{out} is written, but {exc}") from None
    _write(json.dumps(report, indent=2) + "\n")
    return 0


def _output_kind(value: str) -> str:
    """argparse type of --output: a kind of compact.py, muvera specs included."""
    from .compact import check_output_kind

    try:
        return check_output_kind(value)
    except ColbertOnnxError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _json_vectors(vectors, decimals: int) -> dict:
    """One document's output as JSON fields: floats rounded; int8 codes with their scales; packed bits."""
    from .vectors import QuantizedVectors

    if isinstance(vectors, QuantizedVectors):
        return {"embeddings": vectors.codes.tolist(), "scales": vectors.scales.astype(float).round(9).tolist()}
    if vectors.dtype.kind in "iu":
        return {"embeddings": vectors.tolist()}
    return {"embeddings": vectors.astype(float).round(decimals).tolist()}


def cmd_encode(args: argparse.Namespace) -> int:
    if args.input_type == "query" and (
        (args.output != "float32" and not args.output.startswith("muvera")) or args.pool_factor != 1
    ):
        raise InvalidInputError("--output (but float32 and muvera) and --pool-factor apply to documents only")
    texts = _read_lines(args.input)
    encoder = _encoder(args)
    if args.input_type == "query":
        def encode(batch):
            return encoder.encode_queries(batch, output=args.output, progress=args.progress)
    else:
        def encode(batch):
            return encoder.encode_documents(batch, output=args.output, pool_factor=args.pool_factor,
                                            progress=args.progress)
    for start in range(0, len(texts), 256):
        chunk = texts[start : start + 256]
        for offset, vectors in enumerate(encode(chunk)):
            record = {"index": start + offset, **_json_vectors(vectors, args.decimals)}
            _write(json.dumps(record) + "\n")
    return 0


def cmd_rerank(args: argparse.Namespace) -> int:
    documents = list(args.documents)
    if args.documents_file:
        documents += _read_lines(args.documents_file)
    if not documents:
        return _fail("rerank needs documents: --document TEXT (repeatable) or --documents-file")
    encoder = _encoder(args)
    results = encoder.rerank(args.query, documents, top_n=args.top_n)
    payload = {
        "model": encoder.folder.manifest.model,
        "results": [
            {
                "index": r["index"],
                "relevance_score": r["relevance_score"],
                "document": {"text": r["document"]},
            }
            for r in results
        ],
    }
    _write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return 0


def cmd_encode_parquet(args: argparse.Namespace) -> int:
    """Parquet of texts -> Parquet of multivectors (colbert_onnx.arrow's layout), in one process or on Ray."""
    import time

    try:
        from . import arrow
    except ImportError as exc:
        return _fail(f"encode-parquet needs the [arrow] extra (pip install 'colbert-onnx[arrow]'): {exc}")
    keep = [c for c in args.keep_columns.split(",") if c] if args.keep_columns is not None else None
    on_ray = args.ray or args.actors is not None
    ray_only = [flag for flag, value in (("--cpus-per-actor", args.cpus_per_actor),
                                         ("--gpus-per-actor", args.gpus_per_actor),
                                         ("--ray-address", args.ray_address)) if value is not None]
    if ray_only and not on_ray:
        raise InvalidInputError(f"{', '.join(ray_only)} apply on Ray only: add --ray (or --actors N)")
    if on_ray and args.batch_rows is not None:
        raise InvalidInputError("--batch-rows applies in one process only, not on Ray")
    start = time.perf_counter()
    if on_ray:
        from .ray import encode_parquet, ray_module

        try:
            ray_module()
        except ImportError as exc:
            return _fail(f"encode-parquet --ray: {exc}")
        # all or nothing, never onto the input, a bad input named before Ray starts: ray.encode_parquet's own rules
        rows = encode_parquet(args.input, args.out, args.model_dir, actors=1 if args.actors is None else args.actors,
                              cpus_per_actor=args.cpus_per_actor, gpus_per_actor=args.gpus_per_actor,
                              text_column=args.text_column, keep_columns=keep, progress=args.progress,
                              address=args.ray_address, output=args.output, pool_factor=args.pool_factor,
                              config=encoder_config_from_args(args))
    else:
        rows = arrow.encode_parquet(_encoder(args), args.input, args.out, text_column=args.text_column,
                                    output=args.output, pool_factor=args.pool_factor, keep_columns=keep,
                                    batch_rows=1024 if args.batch_rows is None else args.batch_rows,
                                    progress=args.progress)
    seconds = round(time.perf_counter() - start, 3)
    _write(json.dumps({"out": args.out, "rows": rows, "seconds": seconds, "ray": on_ray}) + "\n")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .server.options import run_serve

    return run_serve(args)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="folder written by `colbert-onnx export`")
    add_encoder_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="colbert-onnx", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export", help="export checkpoints (folders or hub ids) into one model folder")
    p.add_argument("sources", nargs="+", help="checkpoint folders or hub ids, e.g. the 128/96/64 trio")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--document-max-length", type=int, default=None,
                   help="default 8192, or the positions the model was trained on where it has fewer")
    p.add_argument(
        "--precision",
        default="fp32,int8,fp16",
        help="comma-separated graphs to write: fp32 (always), int8 (CPU), fp16 (GPU); default all three",
    )
    p.add_argument(
        "--int8-method",
        default=None,
        help="how int8 is made; by default smooth-per-token, replaced where it misses a fidelity gate; a "
        "method named here is written as asked, with a warning if it misses a gate (docs/quantization.md)",
    )
    p.add_argument(
        "--parity-tolerance",
        type=_positive_float,
        default=None,
        metavar="X",
        help="max abs diff from float64 the fp32 graph may have, replacing the adaptive gate (max(1e-4, 4 x the "
        "fp32 PyTorch module's own diff)); docs/export.md",
    )
    p.add_argument(
        "--accept-parity-miss",
        action="store_true",
        help="write the folder even if an fp32 head misses the parity gate: the manifest records the miss and "
        "loading warns; int8/fp16 are measured and gated as always",
    )
    p.add_argument(
        "--engines",
        default=None,
        metavar="LIST",
        help="engines whose graphs to write: auto (default: onnxruntime, and OpenVINO where installed), or a "
        "comma-separated list of onnxruntime, openvino; onnxruntime's graphs are always written, and "
        "'onnxruntime' alone skips the OpenVINO graph (one more fp32-sized file) and its NNCF int8 search",
    )
    p.add_argument("--push-to-hub", metavar="ORG/NAME", default=None, help="upload the folder to this hub repo")
    p.add_argument("--private", action="store_true", default=None, help="with --push-to-hub: a private repo")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("encode", help="encode texts (one per line) to JSON lines of vectors")
    _add_model_options(p)
    p.add_argument("--input", default="-", help="text file, one text per line; '-' for stdin")
    p.add_argument("--input-type", choices=["query", "document"], default="document")
    p.add_argument("--decimals", type=_decimals, default=6, help="rounding of the printed floats (>= 1)")
    p.add_argument("--output", default="float32", type=_output_kind,
                   help="float32, float16, int8, binary, ubinary (documents; int8 adds per-vector scales, "
                   "binary/ubinary are packed sign bits) or muvera[:k_sim=5,dim_proj=16,r_reps=20,seed=42] "
                   "(documents and queries: one fixed-dimensional MUVERA encoding per text, docs/muvera.md)")
    p.add_argument("--pool-factor", type=int, default=1, help="token pooling factor for documents (1: none)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=sys.stderr.isatty(),
                   help="progress bar on stderr (default: when stderr is a terminal)")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("rerank", help="rank documents for a query; prints Jina /v1/rerank-shaped JSON")
    _add_model_options(p)
    p.add_argument("--query", required=True)
    p.add_argument(
        "-d", "--document", dest="documents", action="append", default=[], help="a document text (repeatable)"
    )
    p.add_argument("--documents-file", help="file with one document per line")
    p.add_argument("--top-n", type=int, default=None)
    p.set_defaults(func=cmd_rerank)

    p = sub.add_parser("encode-parquet", help="encode a Parquet column of texts into a multivector Parquet file")
    _add_model_options(p)
    p.add_argument("input", help="Parquet file with a text column")
    p.add_argument("out", help="Parquet file to write (colbert_onnx.arrow layout, settings in its metadata)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--keep-columns", default=None, help="comma-separated columns to copy (default: all but the text)")
    p.add_argument("--output", default="float16", type=_output_kind,
                   help="float16, float32, int8, binary, ubinary or muvera[:k_sim=..,dim_proj=..,r_reps=..,seed=..]")
    p.add_argument("--pool-factor", type=int, default=1, help="token pooling factor (1: none)")
    p.add_argument("--batch-rows", type=int, default=None,
                   help="rows read and encoded at once (one process, not Ray; default 1024)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=sys.stderr.isatty(),
                   help="progress bar on stderr (default: when stderr is a terminal)")
    p.add_argument("--ray", action="store_true", help="run on Ray Data (needs [ray]); a local cluster unless "
                   "--ray-address or a running session")
    p.add_argument("--actors", type=_positive_int, default=None,
                   help="encoder actors on Ray (implies --ray; default 1)")
    p.add_argument("--cpus-per-actor", type=float, default=None,
                   help="CPUs per actor (default: the cluster's CPUs less one, shared evenly)")
    p.add_argument("--gpus-per-actor", type=float, default=None, help="GPUs per actor with --device cuda")
    p.add_argument("--ray-address", default=None, help="address of a running Ray cluster")
    p.set_defaults(func=cmd_encode_parquet)

    from .verify import add_verify_arguments, run_verify

    p = sub.add_parser("verify", help="recompute the fidelity gates of a model folder with the engines and CPU here")
    add_verify_arguments(p)
    p.set_defaults(func=run_verify)

    from .server.options import add_serve_arguments  # argparse only: no web imports here

    p = sub.add_parser("serve", help="Jina-compatible HTTP API (/v1/multi-vector, /v1/rerank); needs [server]")
    add_serve_arguments(p)
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
        _write("", flush=True)  # a full disk shows here, not as a traceback at exit
        return status
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what the shell reports for a tool the closed pipe killed
    except _OutputError as exc:
        print(f"colbert-onnx: error: {exc}", file=sys.stderr)
        return 1
    except ColbertOnnxError as exc:
        from_environment = encoder_settings_from_environment(args)
        return _fail(str(exc) + (f" (settings from the environment: {', '.join(from_environment)})"
                                 if from_environment else ""))
    except KeyboardInterrupt:  # export and encode-parquet remove what they staged; the user asked to stop
        print("colbert-onnx: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's flush at exit does not report the broken pipe again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (tests, embedding): nothing flushes at exit
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
