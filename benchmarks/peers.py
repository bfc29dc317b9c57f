"""The engines users would pick instead of this project, on the same weights: fastembed and OpenVINO.

Every peer runs the plain-attention fp32 export (`plain_peer_folder`): plain MatMul/Softmax attention
and plain rotary ops, no com.microsoft contrib op, which is what fastembed runs for jina-colbert-v2
and what OpenVINO's ONNX frontend can read. The folder has Jina's layout (`onnx/model.onnx`, its
external data as `onnx/model.onnx_data`, tokenizer files at the top), so fastembed loads it with
`specific_model_path` and never touches the hub. The peers are optional (`pip install -e '.[peers]'`):
`missing_peer` says why one cannot run. Measured figures and decisions: docs/peers.md.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from colbert_onnx.engines.openvino_engine import import_openvino
from colbert_onnx.telemetry import import_without_telemetry

Feeds = dict[str, np.ndarray]
PLAIN_GRAPH = "onnx/model.onnx"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")
# OpenVINO configurations: name -> (INFERENCE_PRECISION_HINT, NNCF overflow fix or None for no int8).
# NNCF's default overflow fix (first_layer_only) gives the first quantized layer 7-bit weights and the others
# 8-bit ones, whose u8 x s8 pair sums can saturate int16 on CPUs without VNNI (this machine); "enable" gives
# every layer 7-bit weights.
OPENVINO_CONFIGS = {
    "openvino-f32": ("f32", None),
    "openvino-bf16": ("bf16", None),
    "openvino-int8": ("f32", "first_layer_only"),
    "openvino-int8-overflow-fix": ("f32", "enable"),
}
# peer name -> the packages it needs (import names)
PEERS = {"fastembed": ("fastembed",),
         **{name: ("openvino", "nncf") if fix else ("openvino",) for name, (_, fix) in OPENVINO_CONFIGS.items()}}


# what `make bench` times (the overflow-fix variant is in the fidelity report only: same kernels, same speed)
BENCH_PEERS = ("fastembed", "openvino-f32", "openvino-bf16", "openvino-int8")


def missing_peer(name: str) -> str | None:
    """Why peer `name` cannot run here (a package is not installed, or a bf16 hint on a CPU without bf16,
    which would compile to the openvino-f32 model), or None when it can."""
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; choose one of {', '.join(PEERS)}")
    absent = [p for p in PEERS[name] if importlib.util.find_spec(p) is None]
    if absent:
        return f"{name} needs {', '.join(absent)}, not installed (pip install -e '.[peers]')"
    if OPENVINO_CONFIGS.get(name, ("",))[0] == "bf16" and not cpu_has_bf16():
        return f"{name}: this CPU has no bf16 (OpenVINO compiles the bf16 hint to f32: the openvino-f32 row)"
    return None


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin can run bf16 here (AVX512-bf16 or AMX)."""
    ov = import_openvino()

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def plain_peer_folder(module, tokenizer_source: Path, out: Path) -> Path:
    """Export `module` (a MultiHeadColbert) with plain attention and plain rotary ops into `out`/onnx/model.onnx,
    next to the tokenizer files of `tokenizer_source`; returns `out`. The module's export switches are restored."""
    from colbert_onnx.export.exporter import export_graph
    from colbert_onnx.export.modeling import Mixer

    mixers = [m for m in module.modules() if isinstance(m, Mixer)]
    saved = [(m.fused_rotary, m.attention_chunk) for m in mixers]
    for m in mixers:
        m.fused_rotary, m.attention_chunk = False, None
    try:
        (out / "onnx").mkdir(parents=True, exist_ok=True)
        export_graph(module, out / PLAIN_GRAPH)
    finally:
        for m, (rotary, chunk) in zip(mixers, saved, strict=True):
            m.fused_rotary, m.attention_chunk = rotary, chunk
    for name in TOKENIZER_FILES:
        if (tokenizer_source / name).is_file():
            shutil.copyfile(tokenizer_source / name, out / name)
    return out


def _dim_of(output_name: str) -> int:
    match = re.fullmatch(r"vectors_(\d+)", output_name)
    if not match:
        raise ValueError(f"graph output {output_name!r} is not vectors_<dim>")
    return int(match.group(1))


class OpenVinoEngine:
    """One compiled OpenVINO model (CPU) of a colbert graph: feeds -> {dim: vectors}.

    `precision` is what the compiled model reports it runs (INFERENCE_PRECISION_HINT after compilation):
    a bf16 hint on a CPU without bf16 support compiles to f32, and the rows say so.
    """

    def __init__(self, model, hint: str = "f32", threads: int | None = None) -> None:
        ov = import_openvino()

        config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        self.compiled = core.compile_model(model if isinstance(model, ov.Model) else str(model), "CPU", config)
        self.hint = hint
        self.overflow_fix: str | None = None  # set for NNCF int8 models
        self.precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string())
        self.outputs = [(_dim_of(o.any_name), o) for o in self.compiled.outputs]
        self.request = self.compiled.create_infer_request()

    def __call__(self, feeds: Feeds) -> dict[int, np.ndarray]:
        results = self.request.infer(feeds)
        return {dim: np.array(results[port], copy=True) for dim, port in self.outputs}

    def describe(self) -> str:
        """Which engine ran, for the benchmark rows."""
        ov = import_openvino()

        int8 = f", NNCF int8 (overflow_fix {self.overflow_fix})" if self.overflow_fix else ""
        return f"OpenVINO {ov.get_version().split('-')[0]} CPU{int8}, hint {self.hint}, ran {self.precision}"

    def first(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The first head's vectors for one batch (the benchmark's engine signature)."""
        results = self.request.infer({"input_ids": ids, "attention_mask": mask})
        return results[self.outputs[0][1]]


def nncf_int8(graph: Path, calibration: Sequence[Feeds], overflow_fix: str = "first_layer_only"):
    """OpenVINO int8 of `graph` by NNCF post-training quantization (model_type=TRANSFORMER), calibrated on
    every batch of `calibration`, with NNCF's `overflow_fix` (enable | first_layer_only, its default | disable)."""
    nncf = import_without_telemetry("nncf")
    ov = import_openvino()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    model = ov.Core().read_model(str(graph))
    return nncf.quantize(model, nncf.Dataset(list(calibration)), model_type=nncf.ModelType.TRANSFORMER,
                         subset_size=len(calibration),
                         advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix(overflow_fix)))


def openvino_engine(name: str, graph: Path, calibration: Sequence[Feeds] = (), threads: int | None = None
                    ) -> OpenVinoEngine:
    """The OpenVINO configuration `name` (OPENVINO_CONFIGS) on the plain graph; int8 ones need calibration batches."""
    if name not in OPENVINO_CONFIGS:
        raise ValueError(f"{name!r} is not an OpenVINO peer; choose one of {', '.join(OPENVINO_CONFIGS)}")
    hint, overflow_fix = OPENVINO_CONFIGS[name]
    if overflow_fix is None:
        return OpenVinoEngine(graph, hint, threads)
    if not calibration:
        raise ValueError(f"{name} needs calibration batches")
    engine = OpenVinoEngine(nncf_int8(graph, calibration, overflow_fix), hint, threads)
    engine.overflow_fix = overflow_fix
    return engine


def fastembed_encoder(folder: Path, threads: int | None = None):
    """fastembed's `LateInteractionTextEmbedding` for jina-colbert-v2 on a `plain_peer_folder`, loaded from disk.

    fastembed inserts the marker ids of the real tokenizer (250002/250003) as class constants; a toy
    tokenizer numbers them differently, so they are set on the instance from the folder's tokenizer
    (nothing changes for the real one). Everything else is fastembed's own code.
    """
    from fastembed import LateInteractionTextEmbedding
    from tokenizers import Tokenizer

    embedder = LateInteractionTextEmbedding("jinaai/jina-colbert-v2", specific_model_path=str(folder),
                                            threads=threads, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    markers = {"QUERY_MARKER_TOKEN_ID": "[QueryMarker]", "DOCUMENT_MARKER_TOKEN_ID": "[DocumentMarker]"}
    for attribute, token in markers.items():
        token_id = tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"the tokenizer of {folder} has no {token} token")
        setattr(embedder.model, attribute, token_id)
    return embedder


def fastembed_runner(embedder) -> Callable[[Feeds], dict[int, np.ndarray]]:
    """feeds -> {dim: vectors} through fastembed's own onnxruntime session (its session options), for fidelity."""
    session = embedder.model.model
    names = [o.name for o in session.get_outputs()]

    def run(feeds: Feeds) -> dict[int, np.ndarray]:
        return {_dim_of(n): v for n, v in zip(names, session.run(names, feeds), strict=True)}

    return run


def method_name(graph, absent: str = "") -> str:
    """The int8 method of a manifest GraphEntry (`smooth-per-token`), without the exporter's remarks after
    it; `absent` where the entry records none (an fp32-equivalent int8)."""
    return graph.details.get("method", absent).split(";")[0].split(" ")[0]


def graph_label(encoder) -> str:
    """`model-int8.onnx (smooth-per-token)`: the file a ColbertEncoder runs and how the exporter made it."""
    method = method_name(encoder.graph) if encoder.precision == "int8" else "optimized"
    return f"{encoder.graph.file} ({method})"


def texts_of_tokens(tokenizer, count: int, tokens: int, words: Sequence[str]) -> list[str]:
    """`count` texts that each frame to exactly `tokens` document tokens (`<s> [marker] text </s>`), built
    from `words` in turn, so that every engine gets the same unpadded batch from the same texts."""
    body = tokens - 3
    sizes = {w: len(tokenizer.encode(w, add_special_tokens=False).ids) for w in set(words)}
    filler = next((w for w in words if sizes[w] == 1), None)
    if filler is None:
        raise ValueError("no one-token word to fill the texts with")
    texts, at = [], 0
    for _ in range(count):
        chosen, used = [], 0
        while used < body:
            word = words[at % len(words)]
            at += 1
            if used + sizes[word] <= body:
                chosen.append(word)
                used += sizes[word]
            elif body - used <= 2:
                chosen += [filler] * (body - used)
                used = body
        text = " ".join(chosen)
        got = len(tokenizer.encode(text, add_special_tokens=False).ids)
        if got != body:
            raise ValueError(f"words do not tokenize independently here: {got} tokens instead of {body}")
        texts.append(text)
    return texts
