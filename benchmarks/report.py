"""Writes the encoder section of docs/benchmarks.md and a PNG plot from one benchmark run."""

from __future__ import annotations

from pathlib import Path

from benchmarks.sizes import SIZES

HEADER = "## Encoder (make bench)"


def model_flops_per_token(cfg: dict, length: int) -> float:
    """2 x non-embedding weights per token, plus attention (QK^T and PV) at this length."""
    h, i, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    weights = layers * (4 * h * h + 2 * h * i)
    return 2 * weights + layers * 4 * length * h


def _table(results: dict, size: str) -> list[str]:
    cfg = SIZES[size]
    docs = results.get("documents", {})
    roof = results.get("roofline", {})
    lines = [f"Model: `{size}` ({cfg['num_hidden_layers']} x {cfg['hidden_size']}, vocab {cfg['vocab_size']}, "
             "random weights). Tokens/s are medians of 3 calls (5 at 512) of 4096 tokens, the engines timed in turns; "
             "ratios against `onnx-plain-fp32` and `torch-eager` of the same run; roofline = achieved model "
             "FLOP/s over ORT's own 512x1024x4096 GEMM FLOP/s, timed in turns with the engines at each length.",
             "",
             "| engine | length | tokens/s | vs plain ONNX | vs torch | % of roofline |", "|---|---|---|---|---|---|"]
    for row in sorted(docs.values(), key=lambda r: (r["length"], r["engine"])):
        length = row["length"]
        plain = docs.get(f"onnx-plain-fp32@{length}", {}).get("tokens_per_s")
        torch_ = docs.get(f"torch-eager@{length}", {}).get("tokens_per_s")
        kind = "int8" if "int8" in row["engine"] else "fp32"
        peak = row.get(f"roofline_{kind}") or roof.get(kind, {}).get("gflops")
        achieved = row["tokens_per_s"] * model_flops_per_token(cfg, length) / 1e9
        lines.append(
            f"| {row['engine']} | {length} | {row['tokens_per_s']:.0f} | "
            f"{row['tokens_per_s'] / plain:.2f}x | {row['tokens_per_s'] / torch_:.2f}x | "
            f"{100 * achieved / peak:.0f}% |" if plain and torch_ and peak else
            f"| {row['engine']} | {length} | {row['tokens_per_s']:.0f} | | | |"
        )
    for kind, row in roof.items():
        during = [r[f"roofline_{kind}"] for r in docs.values() if f"roofline_{kind}" in r]
        lines.append(f"\nRoofline {kind} GEMM: {row['gflops']:.1f} GFLOP/s on its own" +
                     (f"; {min(during):.1f}-{max(during):.1f} GFLOP/s in turns with the engines." if during else "."))
    for name, row in results.get("queries", {}).items():
        line = (f"\nQueries ({name}): single p50 {row['p50_ms']:.1f} ms, p95 {row['p95_ms']:.1f} ms; "
                f"32 batched {row['batch32_ms']:.1f} ms vs one-at-a-time loop {row['loop32_ms']:.1f} ms "
                f"(timed in turns; {row['speedup']:.1f}x)")
        if "plain_loop32_ms" in row:
            line += (f"; vs the plain fp32 export one query at a time (fastembed's way) "
                     f"{row['plain_loop32_ms']:.1f} ms ({row['speedup_vs_plain_loop']:.1f}x)")
        lines.append(line + ".")
    lines += _mix_table(results)
    for name, row in results.get("maxsim", {}).items():
        line = (f"\nMaxSim {name} docs x tokens, 32-token query (medians, timed in turns): per-document loop "
                f"{row['loop_ms']:.1f} ms; packed float32 {row['packed_ms']:.1f} ms ({row['speedup']:.1f}x, exact)")
        if "int8_ms" in row:
            line += (f"; packed int8 {row['int8_ms']:.1f} ms ({row['int8_speedup']:.1f}x; max |score error| "
                     f"{row['int8_max_abs_err']:.3f}, top-10 overlap {row['int8_top10']:.1f})")
        lines.append(line + ". See docs/maxsim.md.")
    for name, row in results.get("load", {}).items():
        lines.append(f"\nLoad ({name}): {row['load_s']:.2f} s; peak RSS of the bench process so far "
                     f"{row['peak_rss_mib']:.0f} MiB (includes torch and every engine above).")
    if "process" in results.get("run", {}):
        row = results["run"]["process"]
        lines.append(f"\nThis invocation: {row['minutes']:.0f} min, peak RSS {row['peak_rss_mib']:.0f} MiB "
                     "(what a machine needs to run the same selection of benchmarks).")
    return lines


def _mix_table(results: dict) -> list[str]:
    """The realistic length-mix rows: real tokens/s, padding sent, and each engine against ours-int8."""
    mix = results.get("mix", {})
    if not mix:
        return []
    first = next(iter(mix.values()))
    lines = [f"\nRealistic length mix: {first['docs']} documents, {first['tokens']} real tokens (log-normal "
             "20-2048, median 150; `benchmarks/length_mix.py`), one pass per call, timed in turns; real "
             f"tokens/s count no padding; median of {first.get('rounds', 3)} round(s).", "",
             "| engine | real tokens/s | padded share of tokens sent | vs before | ours-int8 vs it |",
             "|---|---|---|---|---|"]
    return lines + [f"| {name} | {row['real_tokens_per_s']:.0f} | {100 * row['padded_fraction']:.1f}% | "
                    f"{row['vs_before']:.2f}x | {row['ours_vs_it']:.2f}x |" for name, row in mix.items()]


def _peers_table(results: dict) -> list[str]:
    """16 x 256 documents and the query rows against fastembed and OpenVINO (benchmarks/peers.py), if they ran."""
    peers = results.get("peers", {})
    queries = results.get("peer_queries", {})
    skipped = results.get("peers_skipped", {})
    if not peers and not queries and not skipped:
        return []
    lines = [f"\nPeer not run: {name} ({row['reason']})." for name, row in skipped.items()]
    if peers:
        base = peers.get("fastembed", {}).get("docs_per_s")
        ours = peers.get("ours-int8", {}).get("docs_per_s")
        first = next(iter(peers.values()))
        lines += [f"\n### Against the peers: {first['docs']} documents x {first['length']} tokens",
                  "",
                  "Same weights, same batch, all engines timed in turns "
                  f"(median of {first.get('rounds', 3)} calls after a warm-up); "
                  "fastembed is given the texts, the others their ids. docs/peers.md has the method and the "
                  "fidelity of each configuration.",
                  "",
                  "| engine | what ran | docs/s | vs fastembed | vs ours-int8 |", "|---|---|---|---|---|"]
        for name, row in sorted(peers.items(), key=lambda kv: kv[1]["docs_per_s"]):
            vs_fe = f"{row['docs_per_s'] / base:.2f}x" if base else "fastembed not run"
            vs_ours = f"{row['docs_per_s'] / ours:.2f}x" if ours else ""
            lines.append(f"| {name} | {row['engine']} | {row['docs_per_s']:.2f} | {vs_fe} | {vs_ours} |")
    if queries:
        lines += ["\n### Queries against the peers (32 queries)", "",
                  "p50/p95 of single-query calls; 32 one at a time and 32 in one batch, timed in turns.", "",
                  "| engine | what ran | one query p50 ms | p95 ms | 32 one per call ms | 32 batched ms |",
                  "|---|---|---|---|---|---|"]
        for name, row in sorted(queries.items(), key=lambda kv: kv[1]["p50_ms"]):
            batch = f"{row['batch32_ms']:.1f}" if row.get("batch32_ms") is not None else "(one per call only)"
            lines.append(f"| {name} | {row['engine']} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | "
                         f"{row['loop32_ms']:.1f} | {batch} |")
    return lines


def _default_int8_targets(results: dict) -> list[str]:
    """Issue 25's ratios for the default int8 path (`ours-auto-int8`: precision="int8", engine auto, what this CPU's
    rule picks) against OpenVINO at its default on this CPU (the bf16 hint where it runs bf16, else f32) and
    fastembed, at 16 x 256 and on the length mix, and against OpenVINO's default on one long document, where those
    rows ran."""
    peers, mix = results.get("peers", {}), results.get("mix", {})
    ours = peers.get("ours-auto-int8")
    if not ours:
        return []
    default = "openvino-bf16" if "openvino-bf16" in peers else "openvino-f32"
    lines = [f"\n### Issue 25's targets: the default int8 path ({ours['engine']})", ""]
    for peer, target in ((default, "1.0x"), ("fastembed", "3.5x")):
        if peer in peers:
            lines.append(f"- 16 x 256: {ours['docs_per_s'] / peers[peer]['docs_per_s']:.2f}x {peer} "
                         f"(target on an AMX CPU: >= {target})")
    mix_ours = mix.get("ours-auto-int8")
    mix_default = next((row for name, row in mix.items() if name.startswith(f"{default},")), None)
    if mix_ours and mix_default:
        lines.append(f"- length mix: {mix_ours['real_tokens_per_s'] / mix_default['real_tokens_per_s']:.2f}x "
                     f"{default} on its padded batches (target on an AMX CPU: >= 1.3x)")
    long = results.get("long", {})
    for length in sorted({row["length"] for row in long.values()}):
        mine, theirs = long.get(f"ours-auto-int8@{length}"), long.get(f"{default}@{length}")
        if mine and theirs:
            lines.append(f"- one {length}-token document: {theirs['seconds'] / mine['seconds']:.2f}x {default} "
                         f"({mine['seconds']:.2f} s against {theirs['seconds']:.2f} s, median of {mine['rounds']}; "
                         "target on an AMX CPU: >= 1.0x)")
    return lines


def _plot(results: dict, path: Path) -> None:
    if not results.get("documents"):
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    docs = results["documents"]
    engines = sorted({r["engine"] for r in docs.values()})
    lengths = sorted({r["length"] for r in docs.values()})
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(1, len(engines))
    for k, engine in enumerate(engines):
        values = [docs.get(f"{engine}@{n}", {}).get("tokens_per_s", 0) for n in lengths]
        ax.bar([i + k * width for i in range(len(lengths))], values, width, label=engine)
    ax.set_xticks([i + width * (len(engines) - 1) / 2 for i in range(len(lengths))], [str(n) for n in lengths])
    ax.set_xlabel("document length (tokens)")
    ax.set_ylabel("tokens/s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_report(results: dict, docs_dir: Path, machine: str, day: str, size: str) -> None:
    """Replace the encoder section of docs/benchmarks.md (other sections are kept)."""
    path = docs_dir / "benchmarks.md"
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    section = "\n".join([HEADER, "", f"Measured {day} on {machine} (`BENCH_SIZE={size} make bench`).", "",
                         *_table(results, size), *_peers_table(results), *_default_int8_targets(results), "",
                         "![encoder throughput](benchmarks-encoder.png)", ""])
    if HEADER in text:
        start = text.index(HEADER)
        nxt = text.find("\n## ", start + len(HEADER))
        text = text[:start] + section + ("\n" + text[nxt + 1 :] if nxt != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")
    _plot(results, docs_dir / "benchmarks-encoder.png")
