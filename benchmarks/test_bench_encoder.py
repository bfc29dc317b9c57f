"""Encoder benchmarks (pytest-benchmark): torch eager vs plain fp32 ONNX vs our fp32 vs our int8.

Ratios are computed against baselines measured in the same run on the same machine.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from benchmarks.conftest import interleaved_medians, peak_rss_mib, random_ids, record
from colbert_onnx import ColbertEncoder
from colbert_onnx.packed import PackedDocuments

DOC_TOKENS = 4096  # tokens per timed call: batch = DOC_TOKENS // length


@pytest.fixture(scope="session")
def engines(bench_model, tmp_path_factory) -> dict:
    """name -> callable(ids, mask) for each engine that exists in this run."""
    import torch

    from colbert_onnx.export import load_checkpoint
    from colbert_onnx.export.exporter import export_graph
    from colbert_onnx.export.modeling import MultiHeadColbert, set_fused_rotary

    torch.set_num_threads(max(1, torch.get_num_threads()))
    ckpt = load_checkpoint(bench_model["checkpoint"], hash_files=False)
    model = ckpt.module()
    plain = Path(bench_model["onnx"]).parent / "plain.onnx"
    if not plain.is_file():  # what fastembed runs: no fusions, no contrib ops, plain attention
        baseline = MultiHeadColbert(model.roberta, {ckpt.dim: ckpt.head})
        set_fused_rotary(baseline, False)
        export_graph(baseline, plain)
    plain_session = ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"])

    def torch_run(ids, mask):
        with torch.no_grad():
            return model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()

    out = {
        "torch-eager": torch_run,
        "onnx-plain-fp32": lambda ids, mask: plain_session.run(None, {"input_ids": ids, "attention_mask": mask})[0],
    }
    for precision in ("fp32", "int8"):
        try:
            enc = ColbertEncoder(bench_model["onnx"], precision=precision)
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
                         batch_size=32)
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


def test_length_mix_throughput(benchmark, bench_model, engines):
    """Real tokens/s on the seeded log-normal length mix (20-2048 tokens, median 150), timed in turns: the
    encoder's batch planning and unmasked attention against the greedy padded batches and masked attention
    they replace (same int8 graph), and the plain fp32 export on the greedy batches."""
    from benchmarks.length_mix import documents, run_planned
    from colbert_onnx.planning import plan_batches, plan_padded_batches

    if "int8" not in _precisions(bench_model):
        pytest.skip("the length-mix rows time the int8 graph; this run exported none (BENCH_PRECISIONS)")
    enc = ColbertEncoder(bench_model["onnx"], precision="int8")
    docs = documents(MIX_DOCS, marker=enc.preprocessor.special.document_marker)
    real = sum(len(d) for d in docs)
    plans = {"ours-int8": (enc._run, plan_batches),
             f"ours-int8, {BEFORE}": (_masked_attention_run(enc), plan_padded_batches),
             "onnx-plain-fp32, greedy padded batches": (engines["onnx-plain-fp32"], plan_padded_batches)}
    padded: dict[str, float] = {}

    def encode(name: str) -> None:
        padded[name] = run_planned(*plans[name], docs, pad_id=enc.preprocessor.special.pad)

    medians = interleaved_medians({name: partial(encode, name) for name in plans}, rounds=3)
    for name in plans:
        record("mix", name, real_tokens_per_s=real / medians[name], padded_fraction=padded[name], docs=MIX_DOCS,
               tokens=real, vs_before=medians[f"ours-int8, {BEFORE}"] / medians[name])
    benchmark.pedantic(encode, args=("ours-int8",), rounds=1, warmup_rounds=0)  # pytest-benchmark's row
