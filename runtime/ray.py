"""Corpus encoding on Ray Data: a pool of encoder actors turns a dataset of texts into multivector tables.

Needs the ``ray`` extra. The actors are callable classes for ``Dataset.map_batches`` that take and return
``pyarrow.Table`` in colbert_onnx.arrow's layout, so what Ray writes is what ``colbert-onnx
encode-parquet`` writes on one machine. :func:`encode_documents` wires them on an ``ActorPoolStrategy``
and guards three traps measured with Ray 2.60 (docs/scale-out.md):

- actors that claim every CPU leave none for Ray Data's read and write tasks and the pipeline hangs
  (ray-project/ray#44687): refused with :class:`RayPipelineError`;
- an input of one block (a small Parquet file) goes to one actor while the others idle: blocks are
  split to ``batch_size`` rows (a streaming repartition, no shuffle);
- ragged numpy outputs become Ray's private variable-shaped tensor type: the actors always return Arrow.

``ray`` is imported inside the functions, so ``import colbert_onnx.ray`` works without it and says
which extra to install on first use. (Absolute imports: ``import ray`` here is the real Ray.)
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import EncoderConfig
from .errors import ColbertOnnxError, InvalidInputError
from .extras import import_extra
from .session import SessionConfig

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    import ray.data

# CPUs left free for Ray Data's read and write tasks (each asks for one CPU by default).
RESERVED_CPUS = 1.0

_BLACKHOLE_PROXY = "http://127.0.0.1:9"  # nothing listens on the discard port: requests through it fail at once
_LOOPBACK = "127.0.0.1,localhost,::1"
# Environment of a one-machine cluster that stays on loopback (inherited by every Ray process it starts):
LOCAL_CLUSTER_ENV = {
    # Ray 2.60 binds a local cluster to the machine's interface address unless this is 0.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Even with usage stats off, Ray's dashboard process probes cloud metadata endpoints on start
    # (169.254.169.254, metadata.google.internal: usage_lib.get_cluster_config_to_report) and reports
    # "disabled" to Ray's server; through a closed loopback proxy those requests fail on this machine.
    **{name: _BLACKHOLE_PROXY for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY")},
    **{name: _LOOPBACK for name in ("no_proxy", "NO_PROXY")},
}


class RayPipelineError(ColbertOnnxError, ValueError):
    """The requested actor pool cannot run on this Ray cluster (it would hang or cannot be sized)."""


def ray_module() -> Any:
    """The ``ray`` package, or an ImportError naming the extra."""
    return import_extra("ray", "ray", "colbert_onnx.ray")


def init_local_cluster(num_cpus: int | None = None, object_store_memory: int | None = None, **init_options: Any):
    """Start a one-machine Ray cluster that binds and talks to 127.0.0.1 only (no dashboard).

    The loopback settings (LOCAL_CLUSTER_ENV) apply to the processes Ray starts; this process's
    environment is restored afterwards. RayPipelineError if a node still reports another address.
    """
    ray = ray_module()
    from ray._private import ray_constants

    saved = {name: os.environ.get(name) for name in LOCAL_CLUSTER_ENV}
    os.environ.update(LOCAL_CLUSTER_ENV)
    # Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when it is imported: set the flag it derived too.
    cluster_flag, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False
    try:
        context = ray.init(num_cpus=num_cpus, object_store_memory=object_store_memory, include_dashboard=False,
                           **init_options)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster_flag
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    addresses = {n["NodeManagerAddress"] for n in ray.nodes()}
    if addresses != {"127.0.0.1"}:
        ray.shutdown()
        raise RayPipelineError(f"the local Ray cluster bound {sorted(addresses)}, not 127.0.0.1 only")
    return context


def assigned_resources() -> dict[str, float]:
    """Resources Ray reserved for the current actor or task; {} outside a Ray worker."""
    ray = ray_module()
    if not ray.is_initialized():
        return {}
    context = ray.get_runtime_context()
    if context.worker.mode != ray._private.worker.WORKER_MODE:
        return {}  # the driver has no reservation
    return dict(context.get_assigned_resources())


def threads_for(resources: dict[str, float]) -> int | None:
    """onnxruntime intra-op threads for an actor holding `resources`: its CPUs (at least 1); None outside Ray.

    onnxruntime ignores OMP_NUM_THREADS and would start one thread per core of the node in every actor.
    """
    cpus = resources.get("CPU")
    return None if cpus is None else max(1, int(cpus))


def shared_gpu_mem_limit(fraction: float, total_bytes: int) -> int:
    """Bytes of GPU arena for an actor holding `fraction` of a card of `total_bytes`."""
    if not 0 < fraction <= 1:
        raise InvalidInputError(f"GPU fraction must be in (0, 1], got {fraction!r}")
    return int(fraction * total_bytes)


def gpu_total_bytes(gpu_id: str | int) -> int:
    """Memory of one NVIDIA GPU (physical id, as ``ray.get_gpu_ids()`` gives it), read with nvidia-smi."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", str(gpu_id)],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
        return int(float(out.strip().splitlines()[0]) * 1024 * 1024)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        raise RayPipelineError(
            f"cannot read the memory of GPU {gpu_id} with nvidia-smi ({exc}); actors sharing a GPU need a "
            "gpu_mem_limit: pass gpu_mem_limit=BYTES"
        ) from None


def _session_options(config: EncoderConfig, gpu_mem_limit: int | None, resources: dict[str, float]) -> SessionConfig:
    """The config's session options with a GPU arena cap for an actor that shares its card; else as given."""
    session = config.session_options
    if config.device != "cuda" or session.gpu_mem_limit is not None:
        return session  # CPU, or the user's own cap wins
    fraction = resources.get("GPU", 1.0)
    if gpu_mem_limit is None and fraction < 1:
        gpu_ids = ray_module().get_gpu_ids()
        gpu_mem_limit = shared_gpu_mem_limit(fraction, gpu_total_bytes(gpu_ids[0] if gpu_ids else 0))
    if gpu_mem_limit is None:
        return session
    return dataclasses.replace(session, gpu_mem_limit=int(gpu_mem_limit), arena_extend_strategy="kSameAsRequested")


class _TableEncoder:
    """Shared set-up of the actors: one ColbertEncoder per actor, threads and GPU arena sized to its share."""

    def __init__(self, model_dir: str | Path, gpu_mem_limit: int | None, encoder_options: dict[str, Any]) -> None:
        from .encoder import ColbertEncoder

        resources = assigned_resources()
        options = dict(encoder_options)
        config = EncoderConfig.from_options(options.pop("config", None), **options)
        threads = config.threads if config.threads is not None else threads_for(resources)
        session = _session_options(config, gpu_mem_limit, resources)
        self.encoder = ColbertEncoder(model_dir, config, threads=threads, session_options=session)
        self.pid = os.getpid()


class DocumentEncoder(_TableEncoder):
    """``map_batches`` callable: a pyarrow.Table with a text column -> the multivector table (arrow.encode_table).

    ``threads=None`` (default) means the CPUs Ray assigned to the actor. ``gpu_mem_limit`` caps the CUDA
    arena (bytes); left None, an actor holding a fraction of a GPU gets that fraction of the card.
    Every other keyword goes to ``ColbertEncoder``: ``config`` (an EncoderConfig) and/or its fields (dim,
    precision, device, threads, ...).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        output: str = "float16",
        pool_factor: int | None = None,
        text_column: str = "text",
        keep_columns: Sequence[str] | None = None,
        gpu_mem_limit: int | None = None,
        **encoder_options: Any,
    ) -> None:
        super().__init__(model_dir, gpu_mem_limit, encoder_options)
        self.output, self.pool_factor = output, pool_factor
        self.text_column, self.keep_columns = text_column, keep_columns

    def __call__(self, batch: pa.Table) -> pa.Table:
        from .arrow import encode_table

        return encode_table(self.encoder, batch, text_column=self.text_column, output=self.output,
                            pool_factor=self.pool_factor, keep_columns=self.keep_columns)


class QueryEncoder(_TableEncoder):
    """``map_batches`` callable for queries: query_max_length float32 (or float16) vectors per row."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        output: str = "float32",
        text_column: str = "text",
        keep_columns: Sequence[str] | None = None,
        gpu_mem_limit: int | None = None,
        **encoder_options: Any,
    ) -> None:
        super().__init__(model_dir, gpu_mem_limit, encoder_options)
        self.output, self.text_column, self.keep_columns = output, text_column, keep_columns

    def __call__(self, batch: pa.Table) -> pa.Table:
        from .arrow import encode_query_table

        return encode_query_table(self.encoder, batch, text_column=self.text_column, output=self.output,
                                  keep_columns=self.keep_columns)


def _positive(name: str, value: Any, integer: bool) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        raise InvalidInputError(f"{name} must be a positive {'int' if integer else 'number'}, got {value!r}")


def plan_actor_cpus(actors: int, cpus_per_actor: float | None, cluster_cpus: float, node_cpus: float) -> float:
    """CPUs per actor: `cpus_per_actor`, or (None) the cluster's CPUs less RESERVED_CPUS shared evenly, at most
    one node's. RayPipelineError for a pool that would hang: no CPU left for Ray Data's read and write tasks
    (ray-project/ray#44687), or actors larger than any node."""
    room = cluster_cpus - RESERVED_CPUS
    if cpus_per_actor is None:
        cpus_per_actor = min(room / actors, node_cpus)
        if cpus_per_actor <= 0:
            raise RayPipelineError(
                f"the cluster has {cluster_cpus:g} CPUs: nothing is left for actors once {RESERVED_CPUS:g} is kept "
                "for Ray Data's read and write tasks; start Ray with more CPUs"
            )
        return cpus_per_actor
    _positive("cpus_per_actor", cpus_per_actor, integer=False)
    claimed = actors * cpus_per_actor
    if claimed > room:
        raise RayPipelineError(
            f"{actors} actors x {cpus_per_actor:g} CPUs claim {claimed:g} of the cluster's {cluster_cpus:g} CPUs, "
            f"leaving less than {RESERVED_CPUS:g} for Ray Data's read and write tasks: the pipeline would hang "
            f"(ray-project/ray#44687). Keep actors x cpus_per_actor <= {max(room, 0):g}, e.g. cpus_per_actor="
            f"{max(room, 0) / actors:g} or None (threads follow the CPUs assigned, at least 1)"
        )
    if cpus_per_actor > node_cpus:
        raise RayPipelineError(
            f"cpus_per_actor={cpus_per_actor:g} exceeds the largest node's {node_cpus:g} CPUs: no node could host "
            "an actor and the pipeline would wait forever"
        )
    return cpus_per_actor


def _cluster_cpus() -> tuple[float, float]:
    """(CPUs of the whole running cluster, CPUs of its largest alive node)."""
    ray = ray_module()
    if not ray.is_initialized():
        raise RayPipelineError(
            "Ray is not initialized: call ray.init(address=...) for a cluster, or "
            "colbert_onnx.ray.init_local_cluster() for one machine"
        )
    nodes = [n.get("Resources", {}).get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    return float(ray.cluster_resources().get("CPU", 0.0)), float(max(nodes, default=0.0))


def preflight(
    encoder_class: type, model_dir: str | Path, options: dict[str, Any], gpus_per_actor: float | None
) -> None:
    """Refuse bad options on the driver before any actor starts (inside an actor they would surface as
    actor deaths and retries): unknown keywords, a head or precision the folder lacks, an output kind
    the actor cannot write, or a device that does not match the GPUs requested."""
    import inspect

    from .compact import check_output_kind
    from .model_folder import open_model_folder
    from .pooling import check_pool_factor

    base = QueryEncoder if issubclass(encoder_class, QueryEncoder) else DocumentEncoder
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in inspect.signature(encoder_class).parameters.values()):
        encoder_class = base  # a subclass passing *args, **kwargs through: its base's signature is the one to check
    try:
        actor = inspect.signature(encoder_class).bind(str(model_dir), **options)
    except TypeError as exc:
        raise InvalidInputError(f"{encoder_class.__name__}: {exc}") from None
    actor.apply_defaults()
    rest = dict(next((actor.arguments[p.name] for p in inspect.signature(encoder_class).parameters.values()
                      if p.kind is inspect.Parameter.VAR_KEYWORD), {}))
    try:
        config = EncoderConfig.from_options(rest.pop("config", None), **rest)
    except InvalidInputError as exc:
        raise InvalidInputError(f"ColbertEncoder: {exc}") from None
    folder = open_model_folder(model_dir)
    folder.graph_for(config.head(folder.dims), config.precision)
    output = actor.arguments.get("output")
    if base is QueryEncoder:
        if output not in ("float32", "float16"):
            raise InvalidInputError(f"query output must be float32 or float16, got {output!r}")
    else:
        check_output_kind(output)
        check_pool_factor(1 if actor.arguments.get("pool_factor") is None else actor.arguments["pool_factor"])
    if (config.device == "cuda") != bool(gpus_per_actor):
        raise InvalidInputError(
            f"device={config.device!r} with gpus_per_actor={gpus_per_actor!r}: CUDA actors need "
            "gpus_per_actor (1 per card, or a fraction to share one), and GPUs are only used with device='cuda'"
        )


def _map_encoder(ds: ray.data.Dataset, encoder_class: type, model_dir: str | Path, actors: int,
                 cpus_per_actor: float | None, gpus_per_actor: float | None, batch_size: int,
                 options: dict[str, Any]) -> ray.data.Dataset:
    _positive("actors", actors, integer=True)
    _positive("batch_size", batch_size, integer=True)
    if gpus_per_actor is not None:
        _positive("gpus_per_actor", gpus_per_actor, integer=False)
    preflight(encoder_class, model_dir, options, gpus_per_actor)
    cpus = plan_actor_cpus(actors, cpus_per_actor, *_cluster_cpus())
    from ray.data import ActorPoolStrategy

    return ds.repartition(target_num_rows_per_block=batch_size).map_batches(
        encoder_class,
        fn_constructor_args=(str(model_dir),),
        fn_constructor_kwargs=options,
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=ActorPoolStrategy(size=actors),
        num_cpus=cpus,
        num_gpus=gpus_per_actor,
    )


def encode_documents(
    ds: ray.data.Dataset,
    model_dir: str | Path,
    *,
    actors: int = 1,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float | None = None,
    batch_size: int = 256,
    encoder_class: type = DocumentEncoder,
    **encoder_options: Any,
) -> ray.data.Dataset:
    """The dataset's texts as multivector rows, encoded by `actors` DocumentEncoder actors.

    `batch_size` is rows per actor call (the encoder sorts and batches them for onnxruntime itself);
    `encoder_options` go to DocumentEncoder (output, pool_factor, text_column, keep_columns,
    gpu_mem_limit) and from there to ColbertEncoder. Row order is Ray's unless
    ``DataContext.execution_options.preserve_order`` is set; keep an id column to join on.
    `encoder_class` may be a DocumentEncoder subclass (to post-process each table) or QueryEncoder.
    Write with ``ds.write_parquet(path, **colbert_onnx.arrow.parquet_options(output, kept_columns))``.
    """
    return _map_encoder(ds, encoder_class, model_dir, actors, cpus_per_actor, gpus_per_actor, batch_size,
                        encoder_options)


def encode_queries(ds: ray.data.Dataset, model_dir: str | Path, **options: Any) -> ray.data.Dataset:
    """The dataset's texts as query multivector rows on QueryEncoder actors; keywords as encode_documents."""
    return encode_documents(ds, model_dir, encoder_class=QueryEncoder, **options)


def encode_parquet(
    source: str | Path,
    destination: str | Path,
    model_dir: str | Path,
    *,
    actors: int = 1,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float | None = None,
    batch_size: int = 256,
    text_column: str = "text",
    keep_columns: Sequence[str] | None = None,
    progress: bool = False,
    address: str | None = None,
    **encoder_options: Any,
) -> int:
    """One Parquet file of texts -> one multivector Parquet file in input order, encoded on Ray; the same
    file ``colbert_onnx.arrow.encode_parquet`` writes in one process. Returns the rows written.

    Uses the running Ray session; else connects to `address`, or starts :func:`init_local_cluster` (and
    shuts down what it started). `encoder_options` as for :func:`encode_documents` (output, pool_factor,
    ColbertEncoder's options). The driver writes the file, so the output is one file as on one machine;
    on a real cluster, write shards from the workers with :func:`encode_documents` and
    ``Dataset.write_parquet`` instead. Written as ``arrow.staged_output`` says: all or nothing, never onto `source`.
    """
    from .arrow import open_parquet, staged_output

    ray = ray_module()
    with staged_output(source, destination) as staging:  # never onto `source`; all or nothing
        open_parquet(source)  # a missing or non-Parquet input: one error naming it, before Ray starts
        return _encode_parquet_on_ray(ray, source, staging, model_dir, actors, cpus_per_actor, gpus_per_actor,
                                      batch_size, text_column, keep_columns, progress, address, encoder_options)


def _encode_parquet_on_ray(ray, source, destination, model_dir, actors, cpus_per_actor, gpus_per_actor, batch_size,
                           text_column, keep_columns, progress, address, encoder_options) -> int:
    started = not ray.is_initialized()
    if started:
        if address is None:
            init_local_cluster()
        else:
            ray.init(address=address)
    try:
        import pyarrow.parquet as pq

        from .arrow import check_columns

        source_schema = pq.read_schema(source)
        kept = check_columns(source_schema, text_column, keep_columns)
        from ray import data as ray_data

        ds = ray_data.read_parquet(str(source)).select_columns(list(dict.fromkeys([text_column, *kept])))
        encoded = encode_documents(ds, model_dir, actors=actors, cpus_per_actor=cpus_per_actor,
                                   gpus_per_actor=gpus_per_actor, batch_size=batch_size, text_column=text_column,
                                   keep_columns=kept, **encoder_options)
        total = pq.ParquetFile(source).metadata.num_rows
        return _write_in_order(encoded, destination, total, progress, source_schema, text_column, kept, model_dir,
                               encoder_options)
    finally:
        if started:
            ray.shutdown()


def _write_in_order(encoded: ray.data.Dataset, destination: str | Path, total: int, progress: bool,
                    source_schema: pa.Schema, text_column: str, kept: list[str], model_dir: str | Path,
                    encoder_options: dict[str, Any]) -> int:
    """Stream the encoded blocks, in input order, into one Parquet file written by this process."""
    import pyarrow.parquet as pq
    from ray import data as ray_data

    from .arrow import parquet_options, read_metadata
    from .progress import progress_bar

    context = ray_data.DataContext.get_current()
    saved = context.execution_options.preserve_order, context.enable_progress_bars
    context.execution_options.preserve_order, context.enable_progress_bars = True, False
    writer, rows = None, 0
    try:
        with progress_bar(progress, total=total, unit="doc", desc="encoding on Ray") as bar:
            for table in encoded.iter_batches(batch_size=None, batch_format="pyarrow"):
                if table.num_rows == 0:
                    continue
                if writer is None:
                    output = read_metadata(table)["output"]
                    writer = pq.ParquetWriter(destination, table.schema, **parquet_options(output, kept))
                writer.write_table(table)
                rows += table.num_rows
                bar.update(table.num_rows)
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
        if writer is not None:
            writer.close()
    if writer is None:  # no rows: encoding the empty table here still gives the schema and the settings
        empty = source_schema.empty_table().select(list(dict.fromkeys([text_column, *kept])))
        table = DocumentEncoder(model_dir, text_column=text_column, keep_columns=kept, **encoder_options)(empty)
        pq.write_table(table, destination)
    return rows


def serve_application(
    config: Any, *, num_replicas: int = 1, cpus_per_replica: float = 1, gpus_per_replica: float | None = None
) -> Any:
    """A Ray Serve application of the Jina-compatible HTTP server (colbert_onnx.server) for ``serve.run``.

    Each replica builds its own FastAPI app from `config` (a ServerConfig) when it starts, because the
    app object does not pickle; ``threads=None`` in `config.encoder` means the replica's CPUs. Needs the
    server extra as well.
    """
    from ray import serve

    _positive("num_replicas", num_replicas, integer=True)
    _positive("cpus_per_replica", cpus_per_replica, integer=False)

    def build_app() -> Any:  # runs in the replica: absolute imports only (this function is pickled by value)
        import dataclasses

        from colbert_onnx.ray import assigned_resources, threads_for
        from colbert_onnx.server.app import create_app

        encoder = config.encoder
        threads = encoder.threads if encoder.threads is not None else threads_for(assigned_resources())
        return create_app(dataclasses.replace(config, encoder=dataclasses.replace(encoder, threads=threads)))

    actor_options = {"num_cpus": cpus_per_replica, **({"num_gpus": gpus_per_replica} if gpus_per_replica else {})}
    deployment = serve.deployment(serve.ingress(build_app)(), name="colbert-onnx", num_replicas=num_replicas,
                                  ray_actor_options=actor_options)
    return deployment.bind()
