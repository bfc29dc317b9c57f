"""Accuracy-aware mixed precision: when the per-token int8 graph misses a fidelity gate, keep its most
sensitive nodes in fp32 until every gate passes on every head (issue 14).

This follows the anchors' idea, measured sensitivity instead of a fixed recipe: NNCF's
`quantize_with_accuracy_control` ranks quantized layers by the metric drop each one causes and reverts
them to float greedily until the accuracy target holds; Intel Neural Compressor's accuracy-aware tuning
does the same with a fallback order; onnxruntime's `qdq_loss_debug` compares each tensor of the float
and quantized graphs. None of them works on this graph as it is (NNCF and INC need their own runtimes or
QDQ graphs, the per-token int8 of export/per_token.py is not QDQ), so the search is written here:

1. One *switchable* graph holds both paths of every quantizable node: the node's output is
   `Where(flag, int8 path, fp32 path)`, each flag a boolean graph input. One onnxruntime session then
   evaluates any choice of float nodes on the fidelity set, with no graph rebuilt per step.
2. Sensitivity, the expensive way (`restore-one`): every node restored alone, gain in an error score
   (token-cosine loss against the float64 reference, in units of the int8 gates' allowances). The cheap
   way (`local`): one run with every node quantized that also returns both paths of every node, whose
   relative difference is that node's own error on its real (already perturbed) input, as
   qdq_loss_debug measures it. `restore-one` is used when it fits in half the time budget.
3. Greedy restore in that order, 1, 2, 4, ... nodes until every gate passes, then bisection down to the
   fewest nodes that pass; the graph with those nodes in fp32 is built and measured again (its figures
   are the manifest's). Bounded by a time budget; if the budget runs out, or nothing short of fp32
   passes, the search says so and the caller writes the fp32 graph as the int8 precision.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from .fidelity import GATES, FidelitySet, Outputs, collect, compare, cpu_session, passes, token_cosines
from .optimize import save_graph
from .quantize import DEFAULT_INT8_METHOD, prepare_int8, quantizable_nodes, rewrite_per_token

Feeds = dict[str, np.ndarray]
SEARCH_SECONDS = 600.0  # default time budget of one search (per graph of the export)
RANKINGS = ("restore-one", "restore-one-sampled", "local")  # how the search orders the nodes (search_float_nodes)
NO_INT8_GEMM_LEFT = ("only with every int8 GEMM kept fp32 do the gates pass: such a graph computes in fp32, no faster "
                     "than the fp32 graph, which therefore serves int8")
FLAG_PREFIX = "colbert_int8_flag_"
INT8_SIDE, FLOAT_SIDE = "_switch_int8", "_switch_float"  # the two paths' outputs (names unused elsewhere)


@dataclass
class SearchResult:
    """What the search found: the nodes to keep in fp32 (None: nothing short of fp32 passed) and how."""

    float_nodes: list[str] | None
    order: list[str]
    ranking: str
    sensitivity: dict[str, float]
    local_error: dict[str, float]
    kinds: dict[str, str]
    evaluations: int
    seconds: float
    budget_seconds: float
    pure_fidelity: dict[str, dict]
    trace: list[dict] = field(default_factory=list)
    reason: str = ""
    ranking_sample: str = ""  # what restore-one measured on: the whole set or a sample of it

    def manifest(self) -> dict:
        """The manifest record: outcome, each float node with its measured sensitivity, search cost."""
        outcome = "fp32-equivalent" if self.float_nodes is None else ("pure" if not self.float_nodes else "mixed")
        record = {
            "outcome": outcome,
            "ranking": self.ranking,
            **({"ranking_sample": self.ranking_sample} if self.ranking_sample else {}),
            "candidates": len(self.kinds),
            "evaluations": self.evaluations,
            "search_seconds": round(self.seconds, 2),
            "budget_seconds": self.budget_seconds,
            "pure_int8_fidelity": self.pure_fidelity,
            "steps": self.trace,
        }
        if self.float_nodes:
            record["float_nodes"] = [
                {"node": n, "kind": self.kinds[n], "sensitivity": _round(self.sensitivity.get(n)),
                 "local_error": _round(self.local_error.get(n))} for n in self.float_nodes]
        if self.reason:
            record["reason"] = self.reason
        return record


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")


# --- the switchable graph ------------------------------------------------------------------------


def switchable_graph(before: onnx.ModelProto, after: onnx.ModelProto, nodes: Sequence[str]) -> dict[str, str]:
    """Make `after` (the int8 rewrite of `before`) switchable, in place: each node of `nodes` gets its fp32
    path back from `before` and `Where(flag, int8 output, fp32 output)`; returns node -> flag input name."""
    original = {n.name: n for n in before.graph.node}
    before_inits = {t.name: t for t in before.graph.initializer}
    have = {t.name for t in after.graph.initializer}
    producers = {o: n for n in after.graph.node for o in n.output}
    inserts: dict[int, list[onnx.NodeProto]] = {}
    flags: dict[str, str] = {}
    for k, name in enumerate(nodes):
        node = original[name]
        y = node.output[0]
        producer = producers[y]
        producer.output[list(producer.output).index(y)] = y + INT8_SIDE
        float_node = onnx.NodeProto()
        float_node.CopyFrom(node)
        float_node.name, float_node.output[0] = name + "_Float", y + FLOAT_SIDE
        for i in node.input:
            if i in before_inits and i not in have:
                after.graph.initializer.append(before_inits[i])
                have.add(i)
        flag = flags[name] = f"{FLAG_PREFIX}{k}"
        after.graph.input.append(helper.make_tensor_value_info(flag, TensorProto.BOOL, []))
        where = helper.make_node("Where", [flag, y + INT8_SIDE, y + FLOAT_SIDE], [y], name=name + "_Switch")
        inserts[id(producer)] = [float_node, where]
    ordered = []
    for n in after.graph.node:
        ordered.append(n)
        ordered.extend(inserts.get(id(n), []))
    del after.graph.node[:]
    after.graph.node.extend(ordered)
    return flags


class SwitchableSession:
    """One onnxruntime session over a switchable graph: vectors for any choice of fp32 nodes."""

    def __init__(self, model: onnx.ModelProto, flags: dict[str, str], dims: Sequence[int], folder: Path,
                 threads: int | None = None) -> None:
        path = folder / "switchable.onnx"
        for flag in flags.values():
            for side in (INT8_SIDE, FLOAT_SIDE):
                tensor = original_output(model, flag) + side
                model.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
        save_graph(model, path)
        self.session = cpu_session(str(path), threads)
        self.flags, self.dims = flags, list(dims)
        self.outputs = [f"vectors_{d}" for d in self.dims]
        self._paths = {n: (original_output(model, flag), flag) for n, flag in flags.items()}

    def runner(self, float_nodes: set[str]) -> Callable[[Feeds], dict[int, np.ndarray]]:
        switches = {flag: np.array(name not in float_nodes) for name, flag in self.flags.items()}

        def run(feeds: Feeds) -> dict[int, np.ndarray]:
            return dict(zip(self.dims, self.session.run(self.outputs, {**feeds, **switches}), strict=True))

        return run

    def local_errors(self, fset: FidelitySet) -> dict[str, float]:
        """Each node's own relative error ||int8 - fp32|| / ||fp32|| on its input in the all-int8 graph,
        over the real tokens of the fidelity set (one run per batch returns both paths of every node)."""
        names = list(self.flags)
        wanted = [t for n in names for t in (self._paths[n][0] + INT8_SIDE, self._paths[n][0] + FLOAT_SIDE)]
        switches = {flag: np.array(True) for flag in self.flags.values()}
        diff = dict.fromkeys(names, 0.0)
        norm = dict.fromkeys(names, 0.0)
        for feeds in [fset.queries, *fset.documents]:
            values = self.session.run(wanted, {**feeds, **switches})
            for i, name in enumerate(names):
                q, f = (np.asarray(v, np.float64) for v in values[2 * i : 2 * i + 2])
                diff[name] += float(((q - f) ** 2).sum())
                norm[name] += float((f**2).sum())
        return {n: float(np.sqrt(diff[n] / max(norm[n], 1e-30))) for n in names}


def original_output(model: onnx.ModelProto, flag: str) -> str:
    """The tensor a switch node writes (the quantizable node's original output)."""
    return next(n.output[0] for n in model.graph.node if n.op_type == "Where" and n.input[0] == flag)


# --- scoring a choice of float nodes ------------------------------------------------------------


def evaluate(run: Callable[[Feeds], dict[int, np.ndarray]], reference: dict[int, Outputs],
             fset: FidelitySet) -> dict[int, tuple[dict, np.ndarray]]:
    """dim -> (gate metrics with the verdict, token cosines) of one configuration against the reference."""
    got = collect(run, fset)
    result = {}
    for dim, ref in reference.items():
        metrics = compare(ref, got[dim])
        metrics["passed"] = passes("int8", metrics)
        result[dim] = (metrics, token_cosines(ref, got[dim]))
    return result


def error_score(evaluation: dict[int, tuple[dict, np.ndarray]]) -> float:
    """Token-cosine loss in units of the int8 gates' allowances, summed over heads: mean loss over the
    mean-cosine allowance plus the worst 0.1 % loss over the min-cosine allowance. Continuous, unlike
    the top-10 overlap, so that small gains still rank."""
    gates = GATES["int8"]
    score = 0.0
    for _, cosines in evaluation.values():
        loss = 1.0 - cosines
        score += loss.mean() / (1.0 - gates["mean_token_cosine"])
        score += np.quantile(loss, 0.999) / (1.0 - gates["min_token_cosine"])
    return float(score)


def _all_pass(evaluation: dict[int, tuple[dict, np.ndarray]]) -> bool:
    return all(metrics["passed"] for metrics, _ in evaluation.values())


def _figures(evaluation: dict[int, tuple[dict, np.ndarray]]) -> dict[str, dict]:
    keys = ("mean_token_cosine", "worst_text_mean_token_cosine", "min_token_cosine", "top10_overlap", "spearman",
            "passed")
    return {str(d): {k: metrics[k] for k in keys} for d, (metrics, _) in evaluation.items()}


# --- the search ------------------------------------------------------------------------------------


def build_switchable(optimized: onnx.ModelProto, calibration: Sequence[Feeds], dims: Sequence[int], work: Path,
                     method: str = DEFAULT_INT8_METHOD) -> tuple[SwitchableSession, dict[str, str]]:
    """The switchable session of `method`'s per-token graph (written under `work`) and node -> kind."""
    before, _ = prepare_int8(optimized, calibration, method)
    kinds = quantizable_nodes(before)
    after = onnx.ModelProto()
    after.CopyFrom(before)
    rewrite_per_token(after)
    flags = switchable_graph(before, after, sorted(kinds))
    return SwitchableSession(after, flags, dims, work), kinds


def sample_batches(fset: FidelitySet, every: int) -> range:
    """The document batches of a sample: every `every`-th (1: all of them, 0: none, the queries only)."""
    return range(0, len(fset.documents), every) if every else range(0)


def ranking_sample(fset: FidelitySet, reference: dict[int, Outputs],
                   every: int) -> tuple[FidelitySet, dict[int, Outputs]]:
    """The queries and every `every`-th document batch of `fset` (0: the queries only), with the reference's tokens
    of those batches. The batches are sorted by length, so a stride spreads the sample over the lengths."""
    if every == 1:
        return fset, reference
    picked = sample_batches(fset, every)
    counts = np.array([int(feed["attention_mask"].astype(bool).sum()) for feed in fset.documents])
    ends = np.cumsum(counts)
    starts = ends - counts
    sample = FidelitySet(fset.queries, [fset.documents[i] for i in picked], [fset.keep[i] for i in picked])
    tokens = {dim: Outputs(out.queries, np.concatenate([out.doc_tokens[:0]] + [out.doc_tokens[starts[i]:ends[i]]
                                                                               for i in picked]), [])
              for dim, out in reference.items()}
    return sample, tokens


def sample_share(fset: FidelitySet, every: int) -> float:
    """The share of the set's (padded) tokens that `ranking_sample(fset, ..., every)` runs: its share of the cost."""
    sizes = [feed["input_ids"].size for feed in fset.documents]
    picked = sum(sizes[i] for i in sample_batches(fset, every))
    return (fset.queries["input_ids"].size + picked) / (fset.queries["input_ids"].size + sum(sizes))


def sampled_stride(fset: FidelitySet, nodes: int, per_eval: float, seconds: float) -> int | None:
    """The stride (1: the whole set, 0: the queries only) of the largest sample, in tokens, whose restore-one over
    `nodes` nodes fits in `seconds`, given one evaluation of the whole set took `per_eval`; the smaller stride on ties
    (a share does not fall steadily with the stride); None when not even the queries fit."""
    fitting = [every for every in [*range(1, len(fset.documents) + 1), 0]
               if (nodes + 1) * per_eval * sample_share(fset, every) <= seconds]
    return max(fitting, key=lambda every: sample_share(fset, every), default=None)


def ranking_score(run: Callable[[Feeds], dict[int, np.ndarray]], reference: dict[int, Outputs],
                  sample: FidelitySet) -> float:
    """error_score of one configuration on `sample` (reference: its tokens): token cosines only, without the MaxSim
    rankings a verdict needs."""
    queries = run(sample.queries)
    runs = [run(feed) for feed in sample.documents]
    cosines = {}
    for dim, ref in reference.items():
        tokens = [np.asarray(out[dim], np.float32)[feed["attention_mask"].astype(bool)]
                  for feed, out in zip(sample.documents, runs, strict=True)]
        got = Outputs(np.asarray(queries[dim], np.float32), np.concatenate([ref.doc_tokens[:0], *tokens]), [])
        cosines[dim] = ({}, token_cosines(ref, got))
    return error_score(cosines)


def restore_one_sensitivity(session: SwitchableSession, reference: dict[int, Outputs], fset: FidelitySet,
                            base: dict[int, tuple[dict, np.ndarray]] | None = None, every: int = 1) -> dict[str, float]:
    """Node -> drop of the error score when that node alone is restored to fp32 (higher: more sensitive), measured
    on the queries and every `every`-th document batch (1: the whole set; 0: the queries only). `base`: the pure
    graph's evaluation of the whole set, when at hand."""
    sample, tokens = ranking_sample(fset, reference, every)
    base_score = error_score(base) if base and every == 1 else ranking_score(session.runner(set()), tokens, sample)
    return {n: base_score - ranking_score(session.runner({n}), tokens, sample) for n in session.flags}


def search_float_nodes(
    optimized: onnx.ModelProto,
    calibration: Sequence[Feeds],
    reference: dict[int, Outputs],
    fset: FidelitySet,
    work: Path,
    budget_seconds: float = SEARCH_SECONDS,
    ranking: str | None = None,
    method: str = DEFAULT_INT8_METHOD,
) -> SearchResult:
    """The fewest nodes (in sensitivity order) to keep in fp32 so that the per-token int8 graph passes
    every gate on every head. `ranking` forces one of RANKINGS; by default, restore-one on the whole set where it
    fits in half the budget, else on the largest sample of the set that fits (restore-one-sampled), else local."""
    if ranking not in (None, *RANKINGS):
        raise ValueError(f"ranking must be one of {', '.join(RANKINGS)}, got {ranking!r}")
    start = time.perf_counter()
    session, kinds = build_switchable(optimized, calibration, sorted(reference, reverse=True), work, method)
    names = sorted(kinds)
    evaluations = 0

    def measure(float_nodes: set[str]) -> dict[int, tuple[dict, np.ndarray]]:
        nonlocal evaluations
        evaluations += 1
        return evaluate(session.runner(float_nodes), reference, fset)

    t0 = time.perf_counter()
    base = measure(set())
    per_eval = time.perf_counter() - t0
    result = SearchResult(None, [], "", {}, {}, kinds, 0, 0.0, budget_seconds, _figures(base))
    result.local_error = session.local_errors(fset)
    if _all_pass(base):
        result.float_nodes = []
        return _finish(result, start, evaluations, "none needed: the pure int8 graph passes every gate")
    if not _all_pass(measure(set(names))):  # every node in fp32 first: if even that misses, no order helps
        return _finish(result, start, evaluations,
                       "not even every node in fp32 passes the gates (the fp32 graph itself misses them)")
    every = sampled_stride(fset, len(names), per_eval, budget_seconds / 2)
    if ranking is None:
        ranking = "local" if every is None else ("restore-one" if every == 1 else "restore-one-sampled")
    result.ranking = ranking
    if ranking.startswith("restore-one"):
        every = 1 if ranking == "restore-one" else (max(every, 2) if every else 0)
        result.sensitivity = restore_one_sensitivity(session, reference, fset, base, every)
        result.ranking_sample = (f"the queries and {len(sample_batches(fset, every))} of "
                                 f"{len(fset.documents)} document batches ({sample_share(fset, every):.0%} of the "
                                 "tokens)")
        evaluations += len(names) + (every != 1)  # a sample scores the pure graph again; runs on a sample count
        order = sorted(names, key=lambda n: -result.sensitivity[n])
    else:
        order = sorted(names, key=lambda n: -result.local_error[n])
    result.order = order

    def over_budget() -> bool:
        return time.perf_counter() - start > budget_seconds

    def verdict(k: int) -> bool:
        evaluation = measure(set(order[:k]))
        result.trace.append({"float_nodes": k, "score": round(error_score(evaluation), 4),
                             "passed": _all_pass(evaluation)})
        return _all_pass(evaluation)

    failing, passing = 0, None
    k = 1
    while k <= len(order) and not over_budget():
        if verdict(k):
            passing = k
            break
        failing = k
        k = min(2 * k, len(order)) if k < len(order) else len(order) + 1
    if passing is None:
        return _finish(result, start, evaluations, "the time budget ran out")
    while passing - failing > 1 and not over_budget():  # fewest nodes that still pass
        middle = (failing + passing) // 2
        if verdict(middle):
            passing = middle
        else:
            failing = middle
    if not int8_gemms_left(order[:passing], kinds):
        return _finish(result, start, evaluations, NO_INT8_GEMM_LEFT)
    result.float_nodes = order[:passing]
    return _finish(result, start, evaluations, "")


def int8_gemms_left(float_nodes: Sequence[str], kinds: dict[str, str]) -> bool:
    """Whether a graph with `float_nodes` in fp32 still has an int8 GEMM (a node of kind "int8"). Without one it
    is the fp32 graph plus the int8 graph's extra passes (bias kept apart, per-token plumbing) in a second fp32-sized
    file: no faster (0.84x-1.03x the fp32 graph, three sharp-attention toys, Zen 4), so the fp32 graph serves int8."""
    kept = set(float_nodes)
    return any(kind == "int8" and name not in kept for name, kind in kinds.items())


def _finish(result: SearchResult, start: float, evaluations: int, reason: str) -> SearchResult:
    result.seconds = time.perf_counter() - start
    result.evaluations = evaluations
    result.reason = reason
    return result


def relative_speed(graph: Path, baseline: Path, fset: FidelitySet, rounds: int = 3) -> float:
    """Throughput of `graph` over `baseline` on the fidelity set's document batches, timed in turns."""
    sessions = [cpu_session(str(path)) for path in (graph, baseline)]
    outputs = [o.name for o in sessions[0].get_outputs()][:1]
    times: list[list[float]] = [[], []]
    for session in sessions:  # warm-up
        session.run(outputs, fset.documents[0])
    for _ in range(rounds):
        for i, session in enumerate(sessions):
            t0 = time.perf_counter()
            for feeds in fset.documents:
                session.run(outputs, feeds)
            times[i].append(time.perf_counter() - t0)
    return float(np.median(times[1]) / np.median(times[0]))
