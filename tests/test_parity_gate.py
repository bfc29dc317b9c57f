"""The parity gate adapts to what fp32 itself reaches, catches every constructed defect, and is never a dead end
(issue 23).

The tolerance is relative to the fp32 PyTorch module's own distance from float64 on the same batches and
machine (export/parity.py ParityGate), so a faithful checkpoint too sharp for a fixed 1e-4 exports on
every CPU, while each defect of export/parity_defects.py fails on calm, outlier and sharp checkpoints.
"""

from __future__ import annotations

import contextlib
import functools
import json
import warnings

import numpy as np
import pytest

pytest.importorskip("torch", reason="exporting is part of the [export] extra")

from benchmarks.parity_sweep import variant_figures  # noqa: E402
from colbert_onnx import ColbertEncoder, FidelityWarning  # noqa: E402
from colbert_onnx.cli import main  # noqa: E402
from colbert_onnx.export import ParityError, export_model, make_toy_trio  # noqa: E402
from colbert_onnx.export.outlier_family import build_member, draw_member, draw_sharp_member  # noqa: E402
from colbert_onnx.export.parity import (  # noqa: E402
    BATCHES,
    GATE_REFERENCE,
    INFO_REFERENCE,
    PARITY_FLOOR,
    ParityBatches,
    ParityGate,
    ParityReference,
    compare_vectors,
)
from colbert_onnx.export.parity_defects import AFFECTED_HEADS, DEFECTS, injected  # noqa: E402
from colbert_onnx.manifest import read_manifest  # noqa: E402

# Seed 3: graph 2.3-3.3e-4 from float64, the fp32 module 5.6-9.7e-4 (docs/runs/2026-12-06-parity-gate.md); the
# others (in make test-slow) land from 5e-6 to 1.4e-4.
SHARP_SEED = 3
SLOW_SHARP_SEEDS = (1, 2, 5)


# --- the rule, on constructed vectors -------------------------------------------------------------------------


def _reference(torch_error: float, seed: int = 0) -> tuple[ParityReference, np.ndarray]:
    """A one-head reference whose fp32 'module' sits `torch_error` (max abs) from float64, with random signs."""
    rng = np.random.default_rng(seed)
    batches = {name: (np.ones((2, 8), np.int64), np.ones((2, 8), np.int64)) for name in BATCHES}
    exact = {name: rng.normal(size=(2, 8, 16)) for name in BATCHES}
    fp32 = {name: v + torch_error * rng.choice([-1.0, 1.0], size=v.shape) for name, v in exact.items()}
    inputs = ParityBatches(batches, {"queries": 2, "documents": 4}, {}, 8)
    return ParityReference(inputs, {GATE_REFERENCE: {16: exact}, INFO_REFERENCE: {16: fp32}}), exact


def _graph(exact: dict, error: float, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {name: v + error * rng.choice([-1.0, 1.0], size=v.shape) for name, v in exact.items()}


def test_the_tolerance_is_the_floor_where_fp32_is_exact():
    assert ParityGate().tolerance(1e-7) == PARITY_FLOOR


def test_the_tolerance_grows_with_the_fp32_modules_own_error():
    gate = ParityGate()
    assert gate.tolerance(5e-4) == pytest.approx(gate.margin * 5e-4)
    assert gate.median_tolerance(5e-6) == pytest.approx(gate.margin * 5e-6)


def test_a_graph_as_far_from_float64_as_fp32_itself_passes_where_a_fixed_1e_4_fails():
    reference, exact = _reference(torch_error=1.5e-4)
    got = _graph(exact, error=1.8e-4)
    assert compare_vectors(got, reference, 16)["passed"]
    assert not compare_vectors(got, reference, 16, ParityGate(fixed=1e-4))["passed"]


def test_a_graph_far_beyond_what_fp32_reaches_fails():
    reference, exact = _reference(torch_error=1.5e-4)
    figures = compare_vectors(_graph(exact, error=1e-2), reference, 16)
    assert not figures["passed"] and figures["tolerance"] < 1e-2


def test_a_small_systematic_error_under_the_1e_4_floor_fails_on_its_median():
    reference, exact = _reference(torch_error=1e-8)
    figures = compare_vectors(_graph(exact, error=2e-6), reference, 16)
    assert figures["max_abs_diff"] < PARITY_FLOOR
    assert not figures["passed"] and figures["median_abs_diff"] > figures["median_tolerance"]


def test_a_few_near_tied_tokens_far_off_do_not_fail_a_graph_whose_typical_error_is_fp32s():
    """Sharp checkpoints: fp32 itself flips a few near-tied tokens; the median stays at rounding level."""
    reference, exact = _reference(torch_error=1e-8)
    torch_fp32 = reference.vectors[INFO_REFERENCE][16]
    torch_fp32["long"][0, 0] += 2e-4  # the module's own near-tie flip
    got = _graph(exact, error=1e-8)
    got["long"][1, 3] += 3e-4  # the graph's, elsewhere
    assert compare_vectors(got, reference, 16)["passed"]


def test_a_fixed_tolerance_replaces_the_adaptive_gate():
    reference, exact = _reference(torch_error=1e-7)
    figures = compare_vectors(_graph(exact, error=2e-5), reference, 16, ParityGate(fixed=1e-3))
    assert figures["passed"] and figures["tolerance"] == 1e-3 and figures["median_tolerance"] is None
    assert "fixed by the user" in figures["tolerance_rule"]


@pytest.mark.parametrize("bad", [0.0, -1e-4, float("nan"), float("inf")])
def test_a_parity_tolerance_that_is_not_a_positive_number_is_refused_before_any_work(bad, tmp_path):
    with pytest.raises(ValueError, match="positive"):
        export_model([tmp_path / "no-such-checkpoint"], tmp_path / "out", parity_tolerance=bad)


# --- constructed defects fail on calm, outlier and sharp checkpoints -----------------------------------------

MEMBERS = {
    "calm toy": make_toy_trio,
    "outlier seed 0": lambda folder: build_member(draw_member(0), folder),
}
SLOW_MEMBERS = {f"sharp seed {s}": (lambda folder, s=s: build_member(draw_sharp_member(s), folder)) for s in (1, 3)}


@pytest.fixture(scope="module", params=list(MEMBERS))
def member_trio(request, tmp_path_factory):
    return MEMBERS[request.param](tmp_path_factory.mktemp("member"))


@pytest.fixture(scope="module", params=list(SLOW_MEMBERS))
def sharp_trio(request, tmp_path_factory):
    return SLOW_MEMBERS[request.param](tmp_path_factory.mktemp("sharp-member"))


_PARITY_REFERENCES: dict[tuple, object] = {}


@contextlib.contextmanager
def _parity_reference_recorded_once(trio: dict):
    """Exports of `trio` within the block reuse the parity reference its first one recorded (the float64 and fp32
    PyTorch runs, a 2048-token document included): a defect changes the graph or manifest written, never the
    checkpoint's module the reference runs (export/parity_defects.py), so recording it again gives the same."""
    from colbert_onnx.export import exporter

    original = exporter.record_parity_reference

    def recorded_once(module, inputs):
        key = (*(str(trio[d]) for d in sorted(trio)), *module.dims)
        if key not in _PARITY_REFERENCES:
            _PARITY_REFERENCES[key] = original(module, inputs)
        return _PARITY_REFERENCES[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exporter, "record_parity_reference", recorded_once)
        yield


def _assert_defect_fails(defect: str, trio: dict, out) -> None:
    dims = sorted(trio, reverse=True)
    with _parity_reference_recorded_once(trio), injected(defect), pytest.raises(ParityError) as info:
        export_model([trio[d] for d in dims], out, precisions="fp32", engines="onnxruntime")
    failed = {int(d) for d, figures in info.value.figures.items() if not figures["passed"]}
    assert failed == set(AFFECTED_HEADS.get(defect) or dims), info.value
    assert not out.exists()


@pytest.mark.parametrize("defect", DEFECTS)
def test_every_constructed_defect_fails_the_gate_on_the_heads_it_reaches(defect, member_trio, tmp_path):
    _assert_defect_fails(defect, member_trio, tmp_path / "out")


# Outlier members whose tanh/erf difference is small: 4.8x-7.6x the module's median, max under 1e-4 (a real Zen 3).
# They passed while the median's floor was 1e-7. On member 7 it is 1.7x-1.9x, inside fp32's own spread (faithful
# graphs reach 1.72x): no figure separates it there, and its vectors are as close to float64 as fp32's.
SUBTLE_GELU_MEMBERS = (2, 9)


@pytest.mark.parametrize("seed", SUBTLE_GELU_MEMBERS)
def test_gelus_tanh_form_fails_on_members_where_only_its_median_stands_out(seed, tmp_path):
    _assert_defect_fails("gelu_tanh", build_member(draw_member(seed), tmp_path / "ckpt"), tmp_path / "out")


@pytest.mark.slow
@pytest.mark.parametrize("defect", DEFECTS)
def test_every_constructed_defect_fails_the_gate_on_sharp_members(defect, sharp_trio, tmp_path):
    """Sharp members put fp32 itself up to 1e-3 from float64: the defects must still stand out."""
    _assert_defect_fails(defect, sharp_trio, tmp_path / "out")


# --- a faithful checkpoint never dead-ends ---------------------------------------------------------------------


def _export_sharp(seed: int, folder, deep: bool = False, ranking: str | None = None) -> tuple:
    """A sharp member exported at fp32 and int8, onnxruntime's graphs only: OpenVINO's int8 search tries every alpha
    on sharp members and writes nothing (about a minute here); tests/test_openvino_int8.py covers that, marked slow.
    `ranking`: the int8 search's node ranking, by its time budget when None (export/mixed_precision.py)."""
    from colbert_onnx.export import mixed_precision, precisions

    member = draw_sharp_member(seed, deep=deep)
    trio = build_member(member, folder / "ckpt")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(precisions, "search_float_nodes",
                      functools.partial(mixed_precision.search_float_nodes, ranking=ranking))
        out = export_model([trio[d] for d in member.dims], folder / "onnx", precisions="fp32,int8",
                           engines="onnxruntime")
    return member, trio, out, read_manifest(out)


@pytest.fixture(scope="module")
def sharp_export(tmp_path_factory):
    """The int8 search ranks nodes by each node's local error, as where not even restore-one on the queries fits its
    budget (a full-size checkpoint on 2 cores): 26 s here against 63 s for restore-one, which, with its sampled form,
    tests/test_mixed_precision.py covers."""
    return _export_sharp(SHARP_SEED, tmp_path_factory.mktemp("sharp"), ranking="local")


def _assert_every_head_passes(member, manifest) -> None:
    for dim in ("128", "96", "64"):
        figures = manifest.parity["fp32"][dim]
        assert figures["passed"] and figures["token_cosine_passed"], (member.describe(), figures)
        assert figures["max_abs_diff"] <= figures["tolerance"]
        assert figures["median_abs_diff"] <= figures["median_tolerance"]


def test_a_sharp_family_member_exports_with_every_head_passing_parity(sharp_export):
    member, _, _, manifest = sharp_export
    _assert_every_head_passes(member, manifest)


def test_a_fixed_1e_4_gate_would_have_rejected_that_faithful_member(sharp_export):
    """The class is sharp enough to matter: fp32 itself, and so the faithful graph, lands beyond 1e-4."""
    member, _, _, manifest = sharp_export
    worst = max(manifest.parity["fp32"][d]["max_abs_diff"] for d in ("128", "96", "64"))
    assert worst > 1e-4, member.describe()


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SHARP_SEEDS)
def test_more_sharp_family_members_export_with_every_head_passing_parity(seed, tmp_path):
    member, _, _, manifest = _export_sharp(seed, tmp_path)
    _assert_every_head_passes(member, manifest)
    int8 = next(g for g in manifest.graphs if g.precision == "int8")
    assert all(metrics["passed"] for metrics in int8.fidelity.values()), (member.describe(), int8.fidelity)


@pytest.mark.slow
def test_a_deep_sharp_member_with_the_real_models_24_layers_exports_with_every_head_passing_parity(tmp_path):
    member, _, _, manifest = _export_sharp(SHARP_SEED, tmp_path, deep=True)
    _assert_every_head_passes(member, manifest)


def test_the_verdict_holds_whatever_thread_count_and_session_options_change_the_summation_order(sharp_export):
    member, trio, out, _ = sharp_export
    rows = variant_figures({128: trio[128]}, out)
    assert len({(r["torch_threads"], r["ort_threads"], r["optimization"]) for r in rows}) == 12
    assert all(r["passed"] for r in rows), (member.describe(), [r for r in rows if not r["passed"]])


def test_default_int8_on_sharp_members_passes_its_gates_on_every_head(sharp_export):
    member, _, _, manifest = sharp_export
    int8 = next(g for g in manifest.graphs if g.precision == "int8")
    assert int8.mixed_precision is None or int8.mixed_precision["ranking"] == "local"  # None: pure int8 passed
    for dim, metrics in int8.fidelity.items():
        assert metrics["passed"], (member.describe(), dim, metrics)
        assert metrics["worst_text_mean_token_cosine"] >= 0.995, (member.describe(), dim, metrics)


# --- the way through a parity miss -----------------------------------------------------------------------------


def test_accept_parity_miss_writes_the_folder_records_the_miss_and_loading_warns(toy_trio, tmp_path):
    with pytest.warns(FidelityWarning, match="accept_parity_miss"):
        out = export_model([toy_trio[64]], tmp_path / "out", precisions="fp32", parity_tolerance=1e-12,
                           accept_parity_miss=True)
    figures = read_manifest(out).parity["fp32"]["64"]
    assert figures["passed"] is False and figures["accepted_by_user"] is True and figures["max_abs_diff"] > 0
    with pytest.warns(FidelityWarning, match="missed the fp32 parity gate"):
        ColbertEncoder(out, dim=64)


def test_int8_is_measured_and_gated_whatever_the_parity_options(toy_trio, tmp_path):
    for name, options in {"unchecked": {"check_parity": False},
                          "accepted": {"parity_tolerance": 1e-12, "accept_parity_miss": True}}.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FidelityWarning)
            out = export_model([toy_trio[64]], tmp_path / name, precisions="fp32,int8", engines="onnxruntime",
                               **options)
        int8 = next(g for g in read_manifest(out).graphs if g.precision == "int8")
        assert int8.fidelity["64"]["mean_token_cosine"] > 0 and isinstance(int8.fidelity["64"]["passed"], bool), name


def test_the_parity_error_names_the_head_the_batch_and_the_way_through(toy_trio, tmp_path):
    with pytest.raises(ParityError) as info:
        export_model([toy_trio[64]], tmp_path / "out", precisions="fp32", parity_tolerance=1e-12)
    message = str(info.value)
    assert "head 64" in message and "batch" in message and "--accept-parity-miss" in message
    assert info.value.figures["64"]["max_abs_diff"] > 1e-12


def test_cli_parity_miss_exits_2_with_the_figures_and_the_way_through(toy_trio, tmp_path, capsys):
    code = main(["export", str(toy_trio[64]), "--out", str(tmp_path / "out"), "--precision", "fp32",
                 "--parity-tolerance", "1e-12"])
    err = capsys.readouterr().err
    assert code == 2 and "--accept-parity-miss" in err
    figures = json.loads(err[: err.rindex("}") + 1])
    assert figures["parity"]["fp32"]["64"]["passed"] is False
    assert not (tmp_path / "out").exists()


def test_cli_accept_parity_miss_writes_the_folder(toy_trio, tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FidelityWarning)
        code = main(["export", str(toy_trio[64]), "--out", str(tmp_path / "out"), "--precision", "fp32",
                     "--parity-tolerance", "1e-12", "--accept-parity-miss"])
    assert code == 0
    assert read_manifest(tmp_path / "out").parity["fp32"]["64"]["accepted_by_user"] is True


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "abc"])
def test_cli_refuses_a_parity_tolerance_that_is_not_a_positive_number(bad, toy_trio, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["export", str(toy_trio[64]), "--out", str(tmp_path / "out"), "--parity-tolerance", bad])
    assert info.value.code == 2 and "--parity-tolerance" in capsys.readouterr().err
