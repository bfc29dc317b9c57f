"""Encoder benchmarks (pytest-benchmark): torch eager vs plain fp32 ONNX vs our fp32 vs our int8.

Ratios are computed against baselines measured in the same run on the same machine.
"""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from benchmarks.conftest import interleaved_medians, peak_rss_mib, random_ids, record
from benchmarks.peers import PLAIN_GRAPH, graph_label, plain_peer_folder
from colbert_onnx import ColbertEncoder
from colbert_onnx.packed import PackedDocuments
from colbert_onnx.tokenization import pad_batch

DOC_TOKENS = 4096  # tokens per timed call: batch = DOC_TOKENS // length


@pytest.fixture(scope="session")
def plain_folder(bench_model) -> Path:
    """The plain-attention fp32 export of the bench weights in Jina's folder layout: no fusions, no contrib ops,
    what fastembed runs (and OpenVINO's ONNX frontend reads)."""
    from colbert_onnx.export import load_checkpoint
    from colbert_onnx.export.modeling import MultiHeadColbert

    folder = Path(bench_model["onnx"]).parent / "peers"
    if not (folder / PLAIN_GRAPH).is_file():
        ckpt = load_checkpoint(bench_model["checkpoint"], hash_files=False)
        plain_peer_folder(MultiHeadColbert(ckpt.module().roberta, {ckpt.dim: ckpt.head}), bench_model["checkpoint"],
                          folder)
    return folder


@pytest.fixture(scope="session")
def engines(bench_model, plain_folder) -> dict:
    """name -> callable(ids, mask) for each engine that exists in this run."""
    import torch

    from colbert_onnx.export import load_checkpoint

    torch.set_num_threads(max(1, torch.get_num_threads()))
    ckpt = load_checkpoint(bench_model["checkpoint"], hash_files=False)
    model = ckpt.module()
    plain_session = ort.InferenceSession(str(plain_folder / PLAIN_GRAPH), providers=["CPUExecutionProvider"])

    def torch_run(ids, mask):
        with torch.no_grad():
            return model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()

    out = {
        "torch-eager": torch_run,
        "onnx-plain-fp32": lambda ids, mask: plain_session.run(None, {"input_ids": ids, "attention_mask": mask})[0],
    }
    for precision in ("fp32", "int8"):
        try:
            enc = ColbertEncoder(bench_model["onnx"], precision=precision, engine="onnxruntime")
        except Exception as exc:  # precision not exported in this run
            print(f"skip {precision}: {exc}")
            continue
        out[f"ours-{precision}"] = enc._run
    return out


ROUNDS = {128: 3, 512: 5, 2048: 3}  # timed calls per engine (after a warm-up), in turns; 512 is the target


@pytest.mark.parametrize("length", [128, 512, 2048])
def test_document_throughput(benchmark, engines, rooflines, length):
    """All engines and the roofline GEMMs on the same batch, timed in turns (a load change on the shared
    machine hits all alike)."""
    ids, mask = random_ids(length, max(1, DOC_TOKENS // length))
    candidates = {name: partial(run, ids, mask) for name, run in engines.items()}
    candidates.update({f"gemm-{kind}": roofline for kind, roofline in rooflines.items()})  # same moments
    medians = interleaved_medians(candidates, rounds=ROUNDS[length])
    peaks = {f"roofline_{kind}": roofline.gflops() for kind, roofline in rooflines.items()}
    for engine in engines:
        record("documents", f"{engine}@{length}", tokens_per_s=ids.size / medians[engine], length=length,
               engine=engine, **peaks)
    fastest = "ours-int8" if "ours-int8" in engines else "ours-fp32"
    benchmark.pedantic(engines[fastest], args=(ids, mask), rounds=1, warmup_rounds=0)  # pytest-benchmark's row


def test_query_latency_single_and_batched(benchmark, bench_model, engines):
    enc = ColbertEncoder(bench_model["onnx"], precision="int8" if "int8" in _precisions(bench_model) else "fp32",
                         batch_size=32, engine="onnxruntime")
    queries = [f"what is the population of city number {i}?" for i in range(32)]
    singles: list[float] = []
    plain = engines["onnx-plain-fp32"]

    def one_at_a_time() -> None:
        for q in queries:
            start = time.perf_counter()
            enc.encode_queries([q])
            singles.append(time.perf_counter() - start)

    def plain_one_at_a_time() -> None:  # fastembed's way: the plain fp32 export, one query per call
        for q in queries:
            ids = enc.preprocessor.queries([q])
            plain(ids, np.ones_like(ids))

    medians = interleaved_medians({"loop": one_at_a_time, "batched": lambda: enc.encode_queries(queries),
                                   "plain_loop": plain_one_at_a_time}, rounds=5)
    benchmark.pedantic(enc.encode_queries, args=(queries,), rounds=1, warmup_rounds=0)  # pytest-benchmark's row
    singles = singles[len(queries):]  # the warm-up loop's calls left out
    record("queries", enc.precision, p50_ms=1e3 * np.percentile(singles, 50), p95_ms=1e3 * np.percentile(singles, 95),
           batch32_ms=1e3 * medians["batched"], loop32_ms=1e3 * medians["loop"],
           speedup=medians["loop"] / medians["batched"], plain_loop32_ms=1e3 * medians["plain_loop"],
           speedup_vs_plain_loop=medians["plain_loop"] / medians["batched"])


def _precisions(bench_model) -> list[str]:
    import json

    return json.loads((Path(bench_model["onnx"]) / "manifest.json").read_text())["precisions"]


PEER_DOCS, PEER_LENGTH = 16, 256  # the comparison: 16 documents of 256 tokens
# timed calls per engine, by BENCH_SIZE (benchmarks/sizes.py) and row: on a 2-core VM one graph timed twice in turns
# differed by 14-21 % at 3 rounds (docs/runs/2026-12-06-rule-check.md), so the sizes whose calls are short time more
# of them. One 8192-token document at full size is about a minute a call on 2 cores, a full-size mix round ~12 min.
ROUNDS_BY_SIZE = {
    "full": {"peers": 3, "long@2048": 3, "long@8192": 1, "mix": 1},
    "wide": {"peers": 7, "long@2048": 5, "long@8192": 3, "mix": 3},
    "small": {"peers": 11, "long@2048": 7, "long@8192": 7, "mix": 5},
}


@pytest.fixture(scope="session")
def peer_engines(bench_model, plain_folder) -> dict:
    """name -> (what ran, engine) for fastembed and each OpenVINO configuration installed here; the absent
    ones are printed with their reason and left out (`pip install -e '.[peers]'`, which `make bench` runs)."""
    from benchmarks.peers import BENCH_PEERS, fastembed_encoder, missing_peer, openvino_engine
    from colbert_onnx.export.precisions import calibration_feeds

    out: dict = {}
    wanted = os.environ.get("BENCH_PEERS", ",".join(BENCH_PEERS)).split(",")  # BENCH_PEERS=none: no peer (memory)
    runnable = []
    for name in BENCH_PEERS:
        reason = "not in BENCH_PEERS" if name not in wanted else missing_peer(name)
        if reason:
            print(f"skip {name}: {reason}")
            record("peers_skipped", name, reason=reason)
        else:
            runnable.append(name)
    if "fastembed" in runnable:
        import fastembed

        out["fastembed"] = (f"fastembed {fastembed.__version__} LateInteractionTextEmbedding (onnxruntime "
                            f"{ort.__version__} CPU, plain fp32 export, its tokenization and post-processing)",
                            fastembed_encoder(plain_folder))
    calibration = calibration_feeds(ColbertEncoder(bench_model["onnx"]).preprocessor)  # as our int8's
    for name in runnable:
        if name == "fastembed":
            continue
        engine = openvino_engine(name, plain_folder / PLAIN_GRAPH, calibration)
        out[name] = (f"{engine.describe()}, plain fp32 export", engine)
    return out


def _ours(bench_model) -> dict[str, ColbertEncoder]:
    found = {}
    for precision in _precisions(bench_model):
        if precision in ("fp32", "int8"):
            found[precision] = ColbertEncoder(bench_model["onnx"], precision=precision, engine="onnxruntime")
    return found


def _openvino_engine_rows(bench_model, inferences=("f32", "bf16")) -> dict[str, tuple[str, object]]:
    """`ours-openvino-f32` / `ours-openvino-bf16`: the runtime's OpenVINO engine (docs/engines.md) on the folder's
    plain OpenVINO graph at each of `inferences`, which the export writes when openvino is installed; and
    `ours-openvino-int8`, NNCF's int8 of it, where the export wrote one (it passed the int8 gates). Built directly,
    whatever `auto` would pick on this CPU."""
    from colbert_onnx.engines.openvino_engine import OpenvinoEngine, openvino_available
    from colbert_onnx.manifest import read_manifest

    graph = next((g for g in read_manifest(bench_model["onnx"]).engine_graphs if g.engine == "openvino"), None)
    if graph is None or not openvino_available():
        print("skip the OpenVINO engine: no OpenVINO graph in the bench folder, or openvino not installed")
        return {}
    rows = {}
    for inference in inferences:
        engine = OpenvinoEngine(str(Path(bench_model["onnx"]) / graph.file), graph.outputs,
                                inference_precision=inference)
        if engine.inference_precision != inference:
            print(f"skip ours-openvino-{inference}: OpenVINO runs it at {engine.inference_precision} on this CPU")
            continue
        rows[f"ours-openvino-{inference}"] = (f"{engine.describe()}, {graph.file} (plain ops, OpenVINO engine)",
                                              engine)
    int8 = next((g for g in read_manifest(bench_model["onnx"]).engine_graphs if g.precision == "int8"), None)
    if int8 is not None:
        engine = OpenvinoEngine(str(Path(bench_model["onnx"]) / int8.file), int8.outputs)
        rows["ours-openvino-int8"] = (f"{engine.describe()}, {int8.file} ({int8.details.get('method')})", engine)
    return rows


def _auto_int8(bench_model) -> tuple[ColbertEncoder, str] | None:
    """The default int8 path, `ColbertEncoder(folder, precision="int8")` with engine auto (issue 25's targets), and
    what it runs; None when the folder has no int8."""
    if "int8" not in _precisions(bench_model):
        return None
    encoder = ColbertEncoder(bench_model["onnx"], precision="int8")
    described = encoder.describe()
    missed = (" (no int8 graph passed the fidelity gates on the bench weights: this is the fp32 graph; "
              "`python -m benchmarks.bench_engines` times the int8 graphs for speed)" if encoder.graph.fp32_equivalent
              else "")
    return encoder, f"precision='int8', engine auto: {described['engine_detail']}, {described['graph']}{missed}"


def test_documents_against_peers(benchmark, bench_model, bench_size, engines, peer_engines):
    """16 documents x 256 tokens: fastembed (from the texts), OpenVINO f32 / bf16 / NNCF int8 and this project's
    engines on the same batch, timed in turns."""
    from benchmarks.peers import texts_of_tokens
    from colbert_onnx.export.corpus import multilingual_texts

    ours = _ours(bench_model)
    pre = next(iter(ours.values())).preprocessor
    words = [w for text in multilingual_texts() for w in text.split()]
    texts = texts_of_tokens(pre.tokenizer, PEER_DOCS, PEER_LENGTH, words)
    ids, mask = pad_batch(pre.documents(texts).ids, pre.special.pad)
    assert ids.shape == (PEER_DOCS, PEER_LENGTH) and mask.all()
    candidates, described = {}, {}
    if "fastembed" in peer_engines:
        what, embedder = peer_engines["fastembed"]
        candidates["fastembed"] = partial(lambda e: list(e.passage_embed(texts, batch_size=PEER_DOCS)), embedder)
        described["fastembed"] = what
    candidates["onnx-plain-fp32"] = partial(engines["onnx-plain-fp32"], ids, mask)
    described["onnx-plain-fp32"] = f"onnxruntime {ort.__version__} CPU, plain fp32 export"
    for precision, enc in ours.items():
        candidates[f"ours-{precision}"] = partial(enc._run, ids, mask)
        described[f"ours-{precision}"] = f"onnxruntime {ort.__version__} CPU, {graph_label(enc)}"
    for name, (what, engine) in _openvino_engine_rows(bench_model).items():
        candidates[name] = partial(engine.run, ids, mask, (128,))
        described[name] = what
    auto = _auto_int8(bench_model)
    if auto is not None:  # timed even where auto picks onnxruntime: the target's row is the default path's own
        candidates["ours-auto-int8"], described["ours-auto-int8"] = partial(auto[0]._run, ids, mask), auto[1]
    if "int8" in ours:
        candidates["ours-int8-text"] = partial(ours["int8"].encode_documents, texts)
        described["ours-int8-text"] = "ColbertEncoder.encode_documents (int8, from the texts)"
    for name, (what, engine) in peer_engines.items():
        if name != "fastembed":
            candidates[name] = partial(engine.first, ids, mask)
            described[name] = what
    rounds = int(os.environ.get("BENCH_PEER_ROUNDS", ROUNDS_BY_SIZE[bench_size]["peers"]))
    medians = interleaved_medians(candidates, rounds=rounds)
    for name, seconds in medians.items():
        record("peers", name, docs_per_s=PEER_DOCS / seconds, tokens_per_s=ids.size / seconds, engine=described[name],
               docs=PEER_DOCS, length=PEER_LENGTH, rounds=rounds)
    benchmark.pedantic(candidates["ours-int8" if "int8" in ours else "ours-fp32"], rounds=1, warmup_rounds=0)


LONG_LENGTHS = (2048, 8192)  # issue 25's long-document targets: one document of each length


@pytest.mark.parametrize("length", LONG_LENGTHS)
def test_one_long_document_against_openvinos_default(benchmark, bench_size, bench_model, engines, peer_engines, length):
    """One document of `length` tokens: the default int8 path (engine auto), onnxruntime's int8 and OpenVINO at its
    default on this CPU (the bf16 hint where it runs bf16, else f32), timed in turns. fastembed is left out: it
    truncates documents at 512 tokens."""
    auto = _auto_int8(bench_model)
    default = next((name for name in ("openvino-bf16", "openvino-f32") if name in peer_engines), None)
    if auto is None or default is None:
        pytest.skip("the long-document rows compare the default int8 path with OpenVINO's default: "
                    f"{'no int8 exported (BENCH_PRECISIONS)' if auto is None else 'no OpenVINO peer installed'}")
    ids, mask = random_ids(length, 1)
    candidates = {"ours-auto-int8": partial(auto[0]._run, ids, mask),
                  default: partial(peer_engines[default][1].first, ids, mask)}
    described = {"ours-auto-int8": auto[1], default: peer_engines[default][0]}
    if "ours-int8" in engines:
        candidates["ours-int8"] = partial(engines["ours-int8"], ids, mask)
        described["ours-int8"] = "onnxruntime int8 (engine='onnxruntime')"
    rounds = int(os.environ.get("BENCH_LONG_ROUNDS", ROUNDS_BY_SIZE[bench_size][f"long@{length}"]))
    medians = interleaved_medians(candidates, rounds=rounds)
    for name, seconds in medians.items():
        record("long", f"{name}@{length}", seconds=seconds, tokens_per_s=length / seconds, length=length,
               engine=described[name], rounds=rounds)
    benchmark.pedantic(candidates["ours-auto-int8"], rounds=1, warmup_rounds=0)  # pytest-benchmark's row


QUERY_TEXTS = [f"what is the population of city number {i}?" for i in range(32)]


def test_queries_against_peers(benchmark, bench_model, peer_engines):
    """One query per call (p50/p95 of each call) and 32 queries batched, for this project (fp32 and int8 on
    onnxruntime, and the default int8 path with engine auto) and the peers; fastembed the way it encodes queries, one
    per call. All timed in turns."""
    ours = _ours(bench_model)
    pre = next(iter(ours.values())).preprocessor
    singles: dict[str, list[float]] = {}

    def loop(name: str, one) -> None:
        for q in QUERY_TEXTS:
            start = time.perf_counter()
            one(q)
            singles.setdefault(name, []).append(time.perf_counter() - start)

    candidates, described, batched = {}, {}, {}
    for precision, enc in ours.items():
        name = f"ours-{precision}"
        candidates[f"{name}:loop"] = partial(loop, name, lambda q, enc=enc: enc.encode_queries([q]))
        candidates[f"{name}:batch"] = partial(enc.encode_queries, QUERY_TEXTS)
        described[name] = f"ColbertEncoder.encode_queries ({graph_label(enc)})"
    auto = _auto_int8(bench_model)
    if auto is not None:  # the default int8 path's own queries, on whichever engine auto picks on this CPU
        candidates["ours-auto-int8:loop"] = partial(loop, "ours-auto-int8", lambda q: auto[0].encode_queries([q]))
        candidates["ours-auto-int8:batch"] = partial(auto[0].encode_queries, QUERY_TEXTS)
        described["ours-auto-int8"] = f"ColbertEncoder.encode_queries ({auto[1]})"
    if "fastembed" in peer_engines:
        what, embedder = peer_engines["fastembed"]
        candidates["fastembed:loop"] = partial(loop, "fastembed", lambda q: list(embedder.query_embed(q)))
        described["fastembed"] = what + "; query_embed encodes one query per call"
    for name, (what, engine) in peer_engines.items():
        if name == "fastembed":
            continue
        ids = pre.queries(QUERY_TEXTS)  # queries attend to every slot, <mask> padding included

        def one(q: str, engine=engine) -> np.ndarray:
            q_ids = pre.queries([q])
            return engine.first(q_ids, np.ones_like(q_ids))

        candidates[f"{name}:loop"] = partial(loop, name, one)
        candidates[f"{name}:batch"] = partial(engine.first, ids, np.ones_like(ids))
        described[name] = what + " (our tokenization)"
    medians = interleaved_medians(candidates, rounds=5)
    for key, seconds in medians.items():
        name, kind = key.split(":")
        batched.setdefault(name, {})[kind] = seconds
    for name, kinds in batched.items():
        calls = singles[name][len(QUERY_TEXTS):]  # the warm-up loop's calls left out
        record("peer_queries", name, engine=described[name], p50_ms=1e3 * np.percentile(calls, 50),
               p95_ms=1e3 * np.percentile(calls, 95), loop32_ms=1e3 * kinds["loop"],
               batch32_ms=1e3 * kinds["batch"] if "batch" in kinds else None)
    fastest = ours.get("int8") or ours["fp32"]
    benchmark.pedantic(fastest.encode_queries, args=(QUERY_TEXTS,), rounds=1, warmup_rounds=0)


def test_maxsim_packed_vs_per_document_loop(benchmark):
    """Packed float32 (exact) and packed int8 MaxSim vs a per-document numpy loop, timed in the same run."""
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((1000, 300, 128)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=-1, keepdims=True)
    doc_list = list(docs)
    query = rng.standard_normal((32, 128)).astype(np.float32)
    query /= np.linalg.norm(query, axis=-1, keepdims=True)
    packed = PackedDocuments.from_list(doc_list)
    packed8 = PackedDocuments.from_list(doc_list, dtype=np.int8)

    def loop():
        return np.array([(query @ d.T).max(axis=1).sum() for d in doc_list])

    reference = loop()
    exact = packed.scores(query)[0]
    approx = packed8.scores(query)[0]
    np.testing.assert_allclose(exact, reference, rtol=1e-5, atol=1e-5)
    top10 = len(set(np.argsort(-approx)[:10]) & set(np.argsort(-reference)[:10])) / 10
    medians = interleaved_medians({"loop": loop, "float32": lambda: packed.scores(query),
                                    "int8": lambda: packed8.scores(query)})
    benchmark.pedantic(packed.scores, args=(query,), rounds=3, warmup_rounds=1)  # pytest-benchmark's own row
    record("maxsim", "1000x300", loop_ms=1e3 * medians["loop"], packed_ms=1e3 * medians["float32"],
           int8_ms=1e3 * medians["int8"], speedup=medians["loop"] / medians["float32"],
           int8_speedup=medians["loop"] / medians["int8"], int8_max_abs_err=float(np.abs(approx - reference).max()),
           int8_top10=top10)


def _gemm_model(path: Path, k: int = 1024, n: int = 4096) -> None:
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((k, n)).astype(np.float32) * 0.02, "W")
    node = helper.make_node("MatMul", ["X", "W"], ["Y"])
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["m", k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["m", n])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


GEMM_ROWS = 512
GEMM_SETTLE_S = 0.1  # GEMMs right after an engine share the cores with its still-spinning threads


def _gemm_session(kind: str, folder: Path) -> ort.InferenceSession:
    """onnxruntime's own 512x1024x4096 MatMul, fp32 or dynamically quantized int8: the roofline."""
    path = folder / "gemm.onnx"
    _gemm_model(path)
    if kind == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(path), str(folder / "gemm8.onnx"), weight_type=QuantType.QInt8)
        path = folder / "gemm8.onnx"
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


class Roofline:
    """Runs the roofline GEMM for 2 x GEMM_SETTLE_S per call and keeps the median of the GEMMs after the
    first GEMM_SETTLE_S. Timed in turns right after an engine, the first GEMMs share the cores with that
    engine's spinning onnxruntime threads: measured 2026-12-01, the int8 GEMM ran at 580-1070 GFLOP/s
    for ~60 ms after an engine call and 1770-1810 afterwards (a 10-GEMM window, ~25 ms of int8, saw
    only the first)."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session, self.samples = session, []
        self.x = np.random.default_rng(1).standard_normal((GEMM_ROWS, 1024)).astype(np.float32)

    def __call__(self) -> None:
        times, start = [], time.perf_counter()
        while len(times) < 10 or time.perf_counter() - start < 2 * GEMM_SETTLE_S:
            begin = time.perf_counter()
            self.session.run(None, {"X": self.x})
            times.append((begin - start, time.perf_counter() - begin))
        settled = [t for at, t in times if at >= GEMM_SETTLE_S] or [t for _, t in times[len(times) // 2 :]]
        self.samples.append(float(np.median(settled)))

    def gflops(self) -> float:
        """Median over the calls since the last reading (which starts a new series)."""
        gflops = 2 * GEMM_ROWS * 1024 * 4096 / float(np.median(self.samples)) / 1e9
        self.samples = []
        return gflops


@pytest.fixture(scope="session")
def rooflines(tmp_path_factory) -> dict[str, Roofline]:
    return {kind: Roofline(_gemm_session(kind, tmp_path_factory.mktemp(f"gemm-{kind}"))) for kind in ("fp32", "int8")}


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_roofline_gemm(benchmark, rooflines, kind):
    benchmark.pedantic(rooflines[kind], rounds=3, warmup_rounds=1)
    record("roofline", kind, gflops=rooflines[kind].gflops())


def test_load_time_and_peak_rss(benchmark, bench_model):
    enc = benchmark.pedantic(ColbertEncoder, args=(bench_model["onnx"],), rounds=2, warmup_rounds=0)
    enc.encode_documents([" ".join(["Berlin Paris Tokyo"] * 700)])  # ~2k tokens
    record("load", "fp32", load_s=benchmark.stats.stats.median, peak_rss_mib=peak_rss_mib())


MIX_DOCS = 64  # documents of the realistic length mix per timed pass (benchmarks/length_mix.py: ~15k tokens)
BEFORE = "greedy padded batches, masked attention (before)"


def _masked_attention_run(enc: ColbertEncoder):
    """A run of enc's graph with the unmasked attention branch dropped: what every batch took until 2026-12-01."""
    from colbert_onnx.export.attention import drop_unmasked_branch

    model = onnx.load(str(enc.folder.path / enc.graph.file))
    drop_unmasked_branch(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda ids, mask: session.run([enc._output_name], {"input_ids": ids, "attention_mask": mask})[0]


# Plain MatMul/Softmax attention holds rows x heads x length^2 scores per layer: a 16384-token batch of the mix's
# 1065-token documents needs 1.1 GB for each copy, and with every peer alive a 24 GB machine ran out of memory.
# The plain-attention engines get 4096-token batches (fastembed: 4 texts per batch), which also pads less: kinder
# to them, not harsher.
PLAIN_MIX_TOKENS, FASTEMBED_MIX_BATCH = 4096, 4


def test_length_mix_throughput(benchmark, bench_size, bench_model, engines, peer_engines):
    """Real tokens/s on the seeded log-normal length mix (20-2048 tokens, median 150), timed in turns: the
    encoder's batch planning and unmasked attention against the greedy padded batches and masked attention
    they replace (same int8 graph), the plain fp32 export and OpenVINO on the greedy batches, and fastembed
    given the texts sorted by length (kinder than its usual order) in batches of FASTEMBED_MIX_BATCH."""
    from benchmarks.length_mix import documents, padded_fraction, run_planned
    from benchmarks.peers import texts_of_tokens
    from colbert_onnx.export.corpus import multilingual_texts
    from colbert_onnx.planning import plan_batches, plan_padded_batches

    if "int8" not in _precisions(bench_model):
        pytest.skip("the length-mix rows time the int8 graph; this run exported none (BENCH_PRECISIONS)")
    enc = ColbertEncoder(bench_model["onnx"], precision="int8", engine="onnxruntime")
    docs = documents(MIX_DOCS, marker=enc.preprocessor.special.document_marker)
    real = sum(len(d) for d in docs)
    rounds = int(os.environ.get("BENCH_MIX_ROUNDS", ROUNDS_BY_SIZE[bench_size]["mix"]))
    plain, budget = f"greedy padded batches of {PLAIN_MIX_TOKENS} tokens", enc.config.max_batch_tokens
    plans = {"ours-int8": (enc._run, plan_batches, budget),
             f"ours-int8, {BEFORE}": (_masked_attention_run(enc), plan_padded_batches, budget),
             f"onnx-plain-fp32, {plain}": (engines["onnx-plain-fp32"], plan_padded_batches, PLAIN_MIX_TOKENS)}
    for name, (_, engine) in _openvino_engine_rows(bench_model, inferences=()).items():  # our OpenVINO int8
        plans[name] = (engine.run, plan_batches, budget)
    auto = _auto_int8(bench_model)
    if auto is not None:  # the default int8 path (issue 25's mix target)
        plans["ours-auto-int8"] = (auto[0]._run, plan_batches, budget)
    for name, (_, engine) in peer_engines.items():
        if name != "fastembed":
            plans[f"{name}, {plain}"] = (engine.first, plan_padded_batches, PLAIN_MIX_TOKENS)
    padded: dict[str, float] = {}

    def encode(name: str, subset: list[np.ndarray] = docs) -> None:
        run, planner, tokens = plans[name]
        padded[name] = run_planned(run, planner, subset, max_batch_tokens=tokens, pad_id=enc.preprocessor.special.pad)

    candidates = {name: partial(encode, name) for name in plans}
    warm_up = {name: partial(encode, name, docs[:8]) for name in plans}
    if "fastembed" in peer_engines:
        embedder = peer_engines["fastembed"][1]
        words = [w for text in multilingual_texts() for w in text.split()]
        lengths = sorted(len(d) for d in docs)
        texts = [texts_of_tokens(enc.preprocessor.tokenizer, 1, n, words)[0] for n in lengths]
        name, batch = f"fastembed, texts sorted by length, batch_size {FASTEMBED_MIX_BATCH}", FASTEMBED_MIX_BATCH

        def fastembed_pass(chosen: list[str]) -> None:
            list(embedder.passage_embed(chosen, batch_size=batch))

        candidates[name], warm_up[name] = partial(fastembed_pass, texts), partial(fastembed_pass, texts[:8])
        padded[name] = padded_fraction(np.array(lengths), [np.arange(i, min(i + batch, len(lengths)))
                                                           for i in range(0, len(lengths), batch)])
    medians = interleaved_medians(candidates, rounds=rounds, warm_up=warm_up)
    for name in candidates:
        record("mix", name, real_tokens_per_s=real / medians[name], padded_fraction=padded[name], docs=MIX_DOCS,
               tokens=real, rounds=rounds, vs_before=medians[f"ours-int8, {BEFORE}"] / medians[name],
               ours_vs_it=medians[name] / medians["ours-int8"])
    benchmark.pedantic(encode, args=("ours-int8",), rounds=1, warmup_rounds=0)  # pytest-benchmark's row
