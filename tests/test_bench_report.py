"""How `make bench` writes its section of docs/benchmarks.md and names the machine its figures come from."""

from __future__ import annotations

from pathlib import Path

from benchmarks.machine import describe
from benchmarks.report import HEADER, write_report

ZEN3 = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse avx avx2 fma\n\n" \
       "processor\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse avx avx2 fma\n"
SAPPHIRE = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: avx2 avx512f avx512_vnni avx512_bf16 amx_int8\n"


def test_machine_names_the_cpu_and_says_when_it_has_no_vnni():
    got = describe(ZEN3)
    assert got.startswith("AMD EPYC 7B13, ") and got.endswith(", AVX2, no VNNI")


def test_machine_lists_the_int8_and_bf16_instruction_sets_it_has():
    got = describe(SAPPHIRE)
    assert got.endswith("AVX2, AVX-512, AVX512-VNNI, AVX512-bf16, AMX-int8") and "no VNNI" not in got


def test_machine_without_cpuinfo_still_names_something():
    assert describe("").split(",")[0]


def test_report_replaces_its_section_and_keeps_the_next_one_apart(tmp_path: Path):
    (tmp_path / "benchmarks.md").write_text(f"# Benchmarks\n\n{HEADER}\n\nold figures\n\n## GPU\n\nkept\n",
                                            encoding="utf-8")
    write_report({}, tmp_path, machine="a test CPU", day="2026-12-01", size="small")
    text = (tmp_path / "benchmarks.md").read_text(encoding="utf-8")
    assert "old figures" not in text and "Measured 2026-12-01 on a test CPU" in text
    assert "benchmarks-encoder.png)\n\n## GPU\n\nkept\n" in text


def test_report_gives_the_whole_runs_time_and_peak_memory(tmp_path: Path):
    results = {"run": {"process": {"minutes": 70.6, "peak_rss_mib": 23834.0}}}
    write_report(results, tmp_path, machine="a test CPU", day="2026-12-01", size="small")
    assert "This invocation: 71 min, peak RSS 23834 MiB" in (tmp_path / "benchmarks.md").read_text(encoding="utf-8")


def _peer(docs_per_s: float, engine: str = "x") -> dict:
    return {"docs_per_s": docs_per_s, "tokens_per_s": docs_per_s * 256, "engine": engine, "docs": 16, "length": 256}


def test_report_gives_issue_25s_ratios_for_the_default_int8_path(tmp_path: Path):
    results = {"peers": {"ours-auto-int8": _peer(10.0, "precision='int8', engine auto: OpenVINO"),
                         "openvino-bf16": _peer(8.0), "fastembed": _peer(2.0)},
               "mix": {"ours-auto-int8": {"real_tokens_per_s": 1300.0},
                       "openvino-bf16, greedy padded batches of 8192 tokens": {"real_tokens_per_s": 1000.0}}}
    from benchmarks.report import _default_int8_targets

    lines = "\n".join(_default_int8_targets(results))
    assert "default int8 path (precision='int8', engine auto: OpenVINO)" in lines
    assert "16 x 256: 1.25x openvino-bf16 (target on an AMX CPU: >= 1.0x)" in lines
    assert "16 x 256: 5.00x fastembed" in lines and "length mix: 1.30x openvino-bf16" in lines


def test_report_gives_the_long_document_ratios_against_openvinos_default():
    from benchmarks.report import _default_int8_targets

    long = {f"{name}@8192": {"seconds": seconds, "length": 8192, "rounds": 1}
            for name, seconds in (("ours-auto-int8", 30.0), ("openvino-bf16", 36.0), ("ours-int8", 40.0))}
    lines = "\n".join(_default_int8_targets({"peers": {"ours-auto-int8": _peer(10.0), "openvino-bf16": _peer(8.0)},
                                              "long": long}))
    assert "one 8192-token document: 1.20x openvino-bf16 (30.00 s against 36.00 s, median of 1" in lines


def test_without_bf16_units_openvinos_default_is_its_f32_row():
    from benchmarks.report import _default_int8_targets

    lines = _default_int8_targets({"peers": {"ours-auto-int8": _peer(3.0), "openvino-f32": _peer(2.0)}})
    assert any("1.50x openvino-f32" in line for line in lines)
    assert _default_int8_targets({"peers": {"ours-int8": _peer(3.0)}}) == []


def test_bench_engines_reads_the_shapes_it_times_including_one_long_document():
    import argparse

    import pytest

    from benchmarks.bench_engines import parse_shapes

    assert parse_shapes("16x256, 1x8192") == ((16, 256), (1, 8192))
    for bad in ("16x", "1x0", "sixteen"):
        with pytest.raises(argparse.ArgumentTypeError, match="shapes"):
            parse_shapes(bad)


def _int8_times(openvino: float) -> dict:
    """Seconds per call at 16 x 256 and on the length mix: onnxruntime int8 1.0 s, OpenVINO int8 `openvino` s."""
    from benchmarks.bench_engines import MIX

    return {(row, shape): seconds for row, seconds in (("onnxruntime int8", 1.0), ("OpenVINO int8 (NNCF)", openvino))
            for shape in ((16, 256), MIX)}


def test_bench_engines_says_the_rule_holds_where_auto_runs_the_fastest_passing_row():
    from benchmarks.bench_engines import rule_verdicts

    tiers = {"int8": {"auto": "OpenVINO int8 (NNCF)", "passing": ["onnxruntime int8", "OpenVINO int8 (NNCF)"]}}
    (line,) = rule_verdicts(tiers, _int8_times(0.7), ((16, 256),))
    assert line.startswith("- int8: auto runs OpenVINO int8 (NNCF);") and "the rule holds" in line
    (line,) = rule_verdicts(tiers, _int8_times(1.03), ((16, 256),))  # within the turn-to-turn noise
    assert "the rule holds" in line


def test_bench_engines_names_the_faster_passing_row_where_the_rule_does_not_hold():
    from benchmarks.bench_engines import rule_verdicts

    tiers = {"int8": {"auto": "OpenVINO int8 (NNCF)", "passing": ["onnxruntime int8", "OpenVINO int8 (NNCF)"]}}
    (line,) = rule_verdicts(tiers, _int8_times(1.5), ((16, 256),))
    assert "DOES NOT HOLD: onnxruntime int8 1.50x faster on 16 x 256; onnxruntime int8 1.50x faster on the length " \
           "mix" in line


def test_bench_engines_judges_auto_only_against_rows_that_passed_the_gates():
    from benchmarks.bench_engines import rule_verdicts

    # OpenVINO's int8 is faster, but its graph missed the gates: not a candidate, so auto's onnxruntime holds
    tiers = {"int8": {"auto": "onnxruntime int8", "passing": ["onnxruntime int8"]}}
    (line,) = rule_verdicts(tiers, _int8_times(0.5), ((16, 256),))
    assert "passing rows timed: onnxruntime int8;" in line and "the rule holds" in line
    (line,) = rule_verdicts({"int8": {"auto": "onnxruntime int8", "passing": []}}, _int8_times(0.5), ((16, 256),))
    assert "no row that passed the int8 gates was timed, no verdict" in line
    # auto's graph missed while a passing one ran faster: the rule is refuted here
    missed = {"int8": {"auto": "onnxruntime int8", "passing": ["OpenVINO int8 (NNCF)"]}}
    (line,) = rule_verdicts(missed, _int8_times(0.5), ((16, 256),))
    assert "(its graph did not pass the gates at export)" in line
    assert "DOES NOT HOLD: OpenVINO int8 (NNCF) 2.00x faster on 16 x 256" in line
    fp32_served = {"int8": {"auto": "onnxruntime int8", "passing": ["onnxruntime int8"], "fp32_equivalent": True}}
    (line,) = rule_verdicts(fp32_served, _int8_times(0.5), ((16, 256),))
    assert line.startswith("- int8: auto runs onnxruntime int8 (the fp32 graph: fp32-equivalent);")


def test_bench_engines_names_the_row_that_runs_each_manifest_entry():
    from benchmarks.bench_engines import row_name
    from colbert_onnx.manifest import GraphEntry

    def entry(precision: str, **details) -> GraphEntry:
        return GraphEntry("g", precision, {128: "o"}, 1, details=details)

    assert row_name(entry("int8")) == "onnxruntime int8"
    assert row_name(entry("fp32", engine="openvino", inference_precision="f32")) == "OpenVINO f32"
    assert row_name(entry("fp16", engine="openvino", inference_precision="bf16")) == "OpenVINO bf16"
    assert row_name(entry("int8", engine="openvino", inference_precision="f32")) == "OpenVINO int8 (NNCF)"
    assert row_name(entry("int8", engine="openvino", inference_precision="bf16")) == \
        "OpenVINO int8 (NNCF), bf16 float parts"


def test_bench_engines_judges_auto_on_this_cpu_among_rows_it_times(toy_model_dir):
    """On a default export: every graph's row and auto's pick per precision are rows bench_engines times, and
    auto's pick passed its gates (the toy passes every precision)."""
    import pytest

    pytest.importorskip("openvino", reason="the OpenVINO rows need the [openvino] extra (openvino)")
    from benchmarks.bench_engines import factories, rule_tiers

    tiers, rows = rule_tiers(toy_model_dir), set(factories(toy_model_dir, threads=1))
    assert set(tiers) == {"fp32", "int8", "fp16"}
    for precision, tier in tiers.items():
        assert set(tier["passing"]) <= rows and tier["auto"] in tier["passing"], (precision, tier)
    assert "OpenVINO f32" in tiers["fp32"]["passing"] and "onnxruntime fp32" in tiers["fp32"]["passing"]


class _Engine:
    """A fed engine for bench_engines: records the document lengths it is run on."""

    def __init__(self, attention_fused: bool) -> None:
        self.attention_fused, self.lengths = attention_fused, []

    def run(self, ids, mask, dims=None):
        self.lengths.append(ids.shape[1])
        return {}


def test_bench_engines_does_not_run_long_documents_on_an_engine_whose_attention_is_not_fused():
    """Unfused attention holds heads x n x n floats: one 8192-token document took 17 GB (wide size, OpenVINO int8 on
    an AVX2 Zen 3) and the run was killed for memory. Such cells are skipped, saying why; the rest are timed."""
    from benchmarks.bench_engines import MIX, time_engines, unsafe_shapes

    engines = {"fused": _Engine(True), "unfused": _Engine(False)}
    shapes = ((16, 256), (1, 8192))
    skip = unsafe_shapes(engines, shapes)
    assert list(skip) == [("unfused", (1, 8192))] and "attention not fused" in skip["unfused", (1, 8192)]
    times = time_engines(engines, 1, marker=3, shapes=shapes, skip=skip)
    assert max(engines["unfused"].lengths) <= 2048 and max(engines["fused"].lengths) == 8192
    assert ("unfused", (1, 8192)) not in times
    assert {("unfused", (16, 256)), ("unfused", MIX), ("fused", (1, 8192))} <= set(times)


def test_bench_engines_judges_each_shape_among_the_rows_timed_there():
    from benchmarks.bench_engines import MIX, rule_verdicts

    times = {**_int8_times(0.7), ("onnxruntime int8", (1, 8192)): 1.0}  # OpenVINO's row was not timed at 8192
    tiers = {"int8": {"auto": "OpenVINO int8 (NNCF)", "passing": ["onnxruntime int8", "OpenVINO int8 (NNCF)"]}}
    (line,) = rule_verdicts(tiers, times, ((16, 256), (1, 8192)))
    assert "the rule holds" in line and "auto's row not timed at 1 x 8192: attention not fused there" in line
    slower = {**times, ("OpenVINO int8 (NNCF)", MIX): 2.0}
    (line,) = rule_verdicts(tiers, slower, ((16, 256), (1, 8192)))
    assert "DOES NOT HOLD: onnxruntime int8 2.00x faster on the length mix" in line
