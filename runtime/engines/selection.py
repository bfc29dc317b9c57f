"""Opening the engine an EncoderConfig asks for: forced engines honored or refused with a reason, "auto" by
choice.choose_engine on this CPU's features, the pick said in one log line."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from ..errors import EngineUnavailableError
from ..manifest import GraphEntry
from ..model_folder import ModelFolder
from ..verified import passed_here, verdict_here, verified_here
from . import Engine
from .choice import BF16_FEATURES, EXACT_INT8_FEATURES, EngineChoice, choose_engine, cpu_features

logger = logging.getLogger("colbert_onnx")


@dataclass(frozen=True)
class Opened:
    """An engine with the graph it runs and how it was chosen."""

    engine: Engine
    graph: GraphEntry
    choice: EngineChoice


def _bf16_here(features: frozenset[str] | None = None) -> bool:
    """Whether this CPU (its flags `features`, where the caller has read them) has bf16 units."""
    return bool(set(cpu_features() if features is None else features) & set(BF16_FEATURES))


def faster_here(graph: GraphEntry, bf16_here: bool) -> bool:
    """Whether `graph` is one auto may run for speed on this CPU: an int8 graph with its MLP down projections kept
    float (export/openvino_int8.py) is faster than onnxruntime's int8 only with its float parts at bf16 (0.72x with
    f32 ones, 1.15x with bf16 ones, Zen 4), so only its bf16 entry on a CPU with bf16 units."""
    if not graph.details.get("faster_only_with_bf16_float_parts"):
        return True
    return bf16_here and graph.details.get("inference_precision") == "bf16"


def openvino_graph(folder: ModelFolder, dim: int, precision: str, bf16_here: bool | None = None) -> GraphEntry | None:
    """The OpenVINO graph for head `dim` at `precision` on this CPU. Among the entries that passed their gates: first
    one that is faster here (faster_here), then the one whose float parts run bf16 where this CPU has bf16 units
    (int8: OpenVINO's own default there, faster where attention dominates), else the f32 one (a bf16 entry would run
    f32 there, not what was measured). When none passed, the first entry, whose refusal says why. `bf16_here`: this
    CPU's bf16 units, where the caller has read them already."""
    graphs = folder.engine_graphs_for("openvino", dim, precision)
    features = cpu_features()
    bf16_here = _bf16_here(features) if bf16_here is None else bf16_here
    # without bf16 units a bf16 entry runs at f32: where its file has an f32 entry, that entry's verdict is the one
    f32_files = set() if bf16_here else {g.file for g in graphs if g.details.get("inference_precision") != "bf16"}
    passing = [g for g in graphs if passed_here(folder, g, dim, features)
               and not (g.details.get("inference_precision") == "bf16" and g.file in f32_files)]
    if not passing:
        return graphs[0] if graphs else None
    return max(passing, key=lambda g: (faster_here(g, bf16_here),
                                       (g.details.get("inference_precision") == "bf16") == bf16_here))


def openvino_refusal(folder: ModelFolder, dim: int, precision: str, device: str, auto: bool = False) -> str | None:
    """Why the OpenVINO engine cannot serve head `dim` at `precision` from `folder` here; None when it can. With
    `auto`, also why it would not be the faster engine here (a forced engine runs it anyway)."""
    from .openvino_engine import openvino_available

    if device != "cpu":
        return f"the OpenVINO engine runs on the CPU only, device={device!r} was asked"
    if not openvino_available():
        return "the openvino package is not installed (pip install 'colbert-onnx[openvino]')"
    bf16_here = _bf16_here()
    graph = openvino_graph(folder, dim, precision, bf16_here)
    if graph is None:
        skipped = (folder.manifest.extra.get("engine_graphs_not_written") or {}).get("openvino")
        why = (f"at export: {skipped}" if skipped else "an export with the openvino extra installed writes one; at "
               "int8, with NNCF too, where one passes the int8 gates: the manifest's openvino_int8 says what was tried")
        return f"{folder.path} has no OpenVINO graph for head {dim} at {precision} ({why})"
    passed, verified = gates_here(folder, graph, dim)
    if passed is None:
        why = graph.details.get("fidelity_not_measured")
        return (f"the OpenVINO graph {graph.file} at {precision} was not measured against the gates at export"
                + (f" ({why})" if why else "") + f" (`colbert-onnx verify {folder.path} --engine openvino --record` "
                "measures it here and, where it passes, lets this CPU run it)")
    if not passed:
        return (f"the OpenVINO graph {graph.file} missed the fidelity gates of {precision} "
                + ("when `verify --record` measured it on a CPU with this one's units" if verified else "at export"))
    if auto and not faster_here(graph, bf16_here):
        return (f"the OpenVINO graph {graph.file} keeps the MLP down projections float and is faster than "
                f"onnxruntime's {precision} only with its float parts at bf16, which "
                + ("did not pass the gates at export (missed or not measured)" if bf16_here
                   else "this CPU cannot run (no bf16 units)"))
    return None


def gates_here(folder: ModelFolder, graph: GraphEntry, dim: int) -> tuple[bool | None, bool]:
    """Whether head `dim` of `graph` passed the gates that decide here (None: not measured), and whether that verdict
    is a `verify --record` made on a CPU with this one's units rather than the export's."""
    return verdict_here(folder, graph, dim, cpu_features())


def kernel_warning(graph: GraphEntry, folder: ModelFolder | None = None, dim: int | None = None) -> str | None:
    """Why an OpenVINO graph's export-time figures may not hold on this CPU, or None. int8: they were measured with
    exact int8 dot products (VNNI or AMX) and this CPU has neither, so its u8 x s8 pairs can saturate in int16.
    bf16 inference (fp16, or int8's float parts): they were measured with other bf16 units than this CPU's (AMX
    against AVX512-BF16 kernels)."""
    if graph.engine != "openvino":
        return None
    here = set(cpu_features())
    if folder is not None and dim is not None and verified_here(folder, graph, dim, here):
        return None  # measured passing on a CPU with this one's units
    verify = (f"run `colbert-onnx verify FOLDER --engine openvino --precision {graph.precision} --record` here, or "
              "use engine='onnxruntime' (docs/engines.md)")
    measured = graph.details.get("measured_with_int8_units")
    if graph.precision == "int8" and measured and not here & set(EXACT_INT8_FEATURES):
        return (f"{graph.file} passed the int8 gates on a CPU with {', '.join(measured)}; this CPU has none of "
                f"{', '.join(EXACT_INT8_FEATURES)}, where OpenVINO's u8 x s8 products can saturate: {verify}")
    measured = graph.details.get("measured_with_bf16_units")
    units = [f for f in BF16_FEATURES if f in here]
    if graph.details.get("inference_precision") == "bf16" and measured and units and units != list(measured):
        return (f"{graph.file} passed the {graph.precision} gates at bf16 on a CPU with {', '.join(measured)}; this "
                f"CPU runs bf16 with {', '.join(units)}, whose kernels differ: {verify}")
    return None


@dataclass(frozen=True)
class EngineRequest:
    """What an engine is opened for: head `dim` at `precision` from `folder`, on `device`, with the session
    settings an EncoderConfig declares."""

    folder: ModelFolder
    dim: int
    precision: str
    device: str = "cpu"
    threads: int | None = None
    session_options: object = None
    io_binding: bool = False


def onnxruntime_settings(request: EngineRequest) -> list[str]:
    """The settings of `request` only onnxruntime takes, where they differ from their defaults (io_binding, the
    session_options fields): an engine that cannot honour them must not run with them silently dropped."""
    asked = ["io_binding=True"] if request.io_binding else []
    options = request.session_options
    if options is not None:
        default = type(options)()
        asked += [f"session_options.{f.name}={getattr(options, f.name)!r}" for f in dataclasses.fields(options)
                  if getattr(options, f.name) != getattr(default, f.name)]
    return asked


def open_engine(request: EngineRequest, engine: str) -> Opened:
    """The engine `engine` (auto, onnxruntime or openvino) for `request`; EngineUnavailableError naming the reason
    when a forced engine cannot run. Where auto's OpenVINO pick fails to compile here, or compiles with its attention
    unfused (heads x n x n floats per document: 17 GB at 8192 tokens), onnxruntime runs, and the reason says why."""
    r = request
    settings = onnxruntime_settings(r)
    if engine == "onnxruntime":
        choice = EngineChoice("onnxruntime", "asked for (engine='onnxruntime')")
    elif engine == "openvino":
        refusal = openvino_refusal(r.folder, r.dim, r.precision, r.device)
        if refusal is None and settings:
            refusal = (f"{', '.join(settings)} asked for, which only onnxruntime takes (leave them at their defaults "
                       "or use engine='onnxruntime')")
        if refusal is not None:
            raise EngineUnavailableError(f"engine='openvino' cannot run: {refusal}")
        choice = EngineChoice("openvino", "asked for (engine='openvino')")
    elif settings:
        choice = EngineChoice("onnxruntime", f"{', '.join(settings)} asked for, which only onnxruntime takes")
    else:
        refusals = {"openvino": lambda: openvino_refusal(r.folder, r.dim, r.precision, r.device, auto=True)}
        choice = choose_engine(cpu_features(), r.precision,
                               lambda engine: refusals[engine]() if engine in refusals else None)
    try:
        opened = _open(r, choice)
    except EngineUnavailableError as exc:
        if engine != "auto" or choice.engine == "onnxruntime":
            raise
        # auto's pick could not be compiled on this CPU (its plugin refused the graph): the faithful fallback runs
        opened = _onnxruntime_instead(r, f"{choice.reason}; but OpenVINO failed here ({exc}), so onnxruntime")
    if engine == "auto" and not opened.engine.attention_fused:
        unfused_reason = opened.choice.reason
        del opened  # one compiled graph in memory at a time
        opened = _instead_of_unfused(r, unfused_reason)
    logger.info("colbert-onnx engine: %s (%s); %s", opened.choice.engine, opened.engine.describe(),
                opened.choice.reason)
    return opened


def _instead_of_unfused(request: EngineRequest, unfused_reason: str) -> Opened:
    """onnxruntime in place of auto's OpenVINO pick whose attention the CPU plugin left unfused here. The rule reads
    the CPU's flags; what the plugin compiled is the fact (docs/engines.md, "Attention is fused only with VNNI or
    AMX"). Where onnxruntime cannot open either, the OpenVINO engine runs after all, both reasons logged."""
    try:
        return _onnxruntime_instead(request, f"{unfused_reason}; but OpenVINO's CPU plugin did not fuse the graph's "
                                             "attention here (one document of n tokens would hold heads x n x n "
                                             "floats per layer), so onnxruntime")
    except Exception as exc:  # noqa: BLE001 - any failure of the fallback leaves the faithful OpenVINO engine
        choice = EngineChoice("openvino", f"{unfused_reason}; its attention is not fused here, but onnxruntime "
                                          f"failed too ({type(exc).__name__}: {exc}), so OpenVINO after all")
        logger.warning("colbert-onnx engine: %s", choice.reason)
        return _open(request, choice)


def _onnxruntime_instead(request: EngineRequest, reason: str) -> Opened:
    """onnxruntime where auto's OpenVINO pick cannot or should not run here; `reason` says why (logged)."""
    logger.warning("colbert-onnx engine: %s", reason)
    return _open(request, EngineChoice("onnxruntime", reason))


def engine_for(folder: ModelFolder, graph: GraphEntry, threads: int | None, device: str = "cpu",
               session_options=None, io_binding: bool = False) -> Engine:
    """The engine that runs `graph` of `folder`: OpenVINO for its own graphs, at the inference precision the entry
    was measured at; onnxruntime for the folder's graphs."""
    path = str(folder.path / graph.file)
    if graph.engine == "openvino":
        from .openvino_engine import OpenvinoEngine

        return OpenvinoEngine(path, graph.outputs, threads=threads,
                              inference_precision=str(graph.details.get("inference_precision", "f32")))
    from .onnxruntime_engine import OnnxruntimeEngine

    return OnnxruntimeEngine(path, graph.outputs, device=device, threads=threads, config=session_options,
                             io_binding=io_binding)


def _graph(request: EngineRequest, engine: str) -> GraphEntry | None:
    if engine == "openvino":
        return openvino_graph(request.folder, request.dim, request.precision)
    return request.folder.graph_for(request.dim, request.precision)


def _open(request: EngineRequest, choice: EngineChoice) -> Opened:
    graph = _graph(request, choice.engine)
    assert graph is not None  # openvino_refusal said so
    r = request
    return Opened(engine_for(r.folder, graph, r.threads, r.device, r.session_options, r.io_binding), graph, choice)


def reopen(opened: Opened, request: EngineRequest) -> Opened:
    """The same engine for another head: the same loaded graph when it holds that head too."""
    graph = _graph(request, opened.choice.engine)
    if opened.choice.engine == "openvino" and (
            graph is None or not passed_here(request.folder, graph, request.dim, cpu_features())):
        raise EngineUnavailableError(f"the OpenVINO engine has no graph passing the gates for head {request.dim}")
    if graph.file == opened.graph.file:
        return Opened(opened.engine, graph, opened.choice)
    return _open(request, opened.choice)
