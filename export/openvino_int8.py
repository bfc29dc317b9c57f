"""int8 for the OpenVINO engine: NNCF post-training quantization of the plain-ops graph, held to the int8 gates.

OpenVINO's CPU plugin cannot run our onnxruntime int8 graph (per-token QuantizeLinear), so its int8 is NNCF's own
(static per-tensor activations, per-channel weights, SmoothQuant, fast bias correction), saved as OpenVINO IR and
measured *on OpenVINO* against the float64 reference by the same int8 gates as every other int8 graph
(docs/engines.md "OpenVINO int8"). NNCF's defaults miss them on outlier checkpoints, for two reasons measured on
the outlier toy trio (docs/runs/2026-12-06-openvino-int8.md):
- it quantizes the embedding table (Gather) per row, whose outlier columns LayerNorm then multiplies by 10-40:
  min token cosine 0.80 with every MatMul left in float. The embedding stays float here (it costs no compute);
- SmoothQuant at its transformer default alpha 0.95 leaves the outlier tokens at 0.92; 0.5 (the alpha of our
  onnxruntime int8) passes. So alphas are tried in SMOOTH_ALPHAS order and the first that passes every gate on
  every head is kept; when none does, no OpenVINO int8 graph is written and the manifest says why.
- on trained weights (all-MiniLM-L6-v2) no alpha passes with every MatMul int8: the input of the MLP's down
  projection (fc2, after GELU) carries the outliers. So when no alpha passes, the alphas are tried again with the
  fc2 MatMuls kept float (KEPT_FLOAT_STAGES), which passes there (docs/runs/2026-12-06-openvino-trained.md). Such a
  graph ran 0.72x onnxruntime's int8 with f32 float parts and 1.15x with bf16 ones (wide toy, Zen 4), so its entry
  says `faster_only_with_bf16_float_parts` and `auto` runs it only where its float parts run bf16.
NNCF's own accuracy-control loop (`quantize_with_accuracy_control`) was tried and is not used: with SmoothQuant
on, reverting one MatMul to float left its smoothing scale on the activation and broke the model (cosines ~0).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from colbert_onnx.engines.choice import EXACT_INT8_FEATURES, cpu_features
from colbert_onnx.engines.openvino_engine import import_openvino, plugin_message
from colbert_onnx.telemetry import import_without_telemetry

from .fidelity import GATES
from .mixed_precision import SEARCH_SECONDS
from .precisions import variant_file

ENGINE = "openvino"
SMOOTH_ALPHAS = (0.5, 0.65, 0.35, 0.8, 0.95)  # ours first; NNCF's transformer default (0.95) last
KEPT_FLOAT_TYPES = ("Gather",)  # the embedding table: per-row int8 of its outlier columns breaks outlier checkpoints
# MatMuls kept float (NNCF ignored-scope name patterns), one stage after another: every MatMul int8, then the MLP
# down projections (fc2) float; each stage tries every alpha before the next starts
FC2_MATMULS = r".*/mlp/fc2/MatMul"
KEPT_FLOAT_STAGES: tuple[tuple[str, ...], ...] = ((), (FC2_MATMULS,))


def nncf_available() -> bool:
    """Whether NNCF (the `[export]` extra) and OpenVINO can be imported here."""
    return all(importlib.util.find_spec(name) is not None for name in ("nncf", "openvino"))


def openvino_int8_file(file: str) -> str:
    """model-openvino.onnx -> model-openvino-int8.xml (its weights: the .bin beside it)."""
    return str(Path(variant_file(file, "int8")).with_suffix(".xml"))


def gate_margin(fidelity: dict[str, dict]) -> float:
    """The smallest distance to an int8 gate over every head (>= 0: every gate holds)."""
    return min(metrics[key] - bound for metrics in fidelity.values() for key, bound in GATES["int8"].items())


def quantize(graph: Path, calibration: Sequence[dict], alpha: float, kept_float: Sequence[str] = ()):
    """NNCF's int8 (an ov.Model) of the plain graph file `graph`: SmoothQuant `alpha`, the embedding kept float, and
    the MatMuls whose names match a `kept_float` pattern (NNCF refuses a pattern that matches none)."""
    nncf = import_without_telemetry("nncf")
    ov = import_openvino()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    nncf.set_log_level(logging.ERROR)  # its INFO lines and (below) progress bars are not the exporter's output
    model = ov.Core().read_model(str(graph))
    with contextlib.redirect_stdout(io.StringIO()):
        return nncf.quantize(
            model, nncf.Dataset(list(calibration)), model_type=nncf.ModelType.TRANSFORMER,
            preset=nncf.QuantizationPreset.MIXED, subset_size=len(calibration),
            ignored_scope=nncf.IgnoredScope(types=list(KEPT_FLOAT_TYPES), patterns=list(kept_float)),
            advanced_parameters=AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=alpha)))


def build_openvino_int8(out: Path, entry: dict, calibration: Sequence[dict], measure: Callable[[Path], dict],
                        alphas: Sequence[float] = SMOOTH_ALPHAS, budget_seconds: float = SEARCH_SECONDS,
                        stages: Sequence[Sequence[str]] = KEPT_FLOAT_STAGES) -> tuple[dict | None, dict]:
    """The engine_graphs entry of the OpenVINO int8 graph of `entry` (the plain-ops fp32 graph), or None when no
    (stage, alpha) pair passed the int8 gates; and a record of every attempt (alpha, MatMuls kept float, gate margin,
    verdict) for the manifest. Stages (`stages`: MatMul name patterns kept float) are tried in order, every alpha each.
    NNCF or OpenVINO failing on the graph ends the search with its error recorded: the int8 graph is optional.
    `measure(graph file)` is its per-head fidelity on OpenVINO (f32 inference) against float64, int8 gates.
    No attempt is started after `budget_seconds` (the onnxruntime int8 search's budget: one NNCF run and one
    measurement take minutes at full size)."""
    ov = import_openvino()

    file = openvino_int8_file(entry["file"])
    xml, weights = out / file, (out / file).with_suffix(".bin")
    attempts: list[dict] = []
    start = time.perf_counter()
    plan = [(tuple(kept), alpha) for kept in stages for alpha in alphas]
    for kept, alpha in plan:
        if attempts and time.perf_counter() - start > budget_seconds:
            break
        tried = {"smooth_alpha": alpha, **({"kept_float_matmuls": list(kept)} if kept else {})}
        try:
            ov.save_model(quantize(out / entry["file"], calibration, alpha, kept), str(xml), compress_to_fp16=False)
            fidelity = measure(xml)
        except Exception as exc:  # NNCF or the CPU plugin failed here: no OpenVINO int8, the export goes on
            attempts.append({**tried, "passed": False, "error": f"{type(exc).__name__}: {plugin_message(exc)}"})
            break
        passed = all(m["passed"] for m in fidelity.values())
        attempts.append({**tried, "gate_margin": round(gate_margin(fidelity), 6), "passed": passed})
        if passed:
            nncf = import_without_telemetry("nncf")

            floats = "embedding Gather" + (f" and MatMuls {', '.join(kept)}" if kept else "")
            return {
                "file": file, "external_data": weights.name, "precision": "int8", "inference_precision": "f32",
                "outputs": dict(entry["outputs"]), "backbone_sha256": entry.get("backbone_sha256"),
                "bytes": xml.stat().st_size + weights.stat().st_size, "engine": ENGINE,
                "method": f"NNCF {nncf.__version__} post-training int8 (model_type=TRANSFORMER, SmoothQuant alpha "
                          f"{alpha}, {floats} kept float) of {entry['file']}, saved as OpenVINO IR",
                "smooth_alpha": alpha, "kept_float_types": list(KEPT_FLOAT_TYPES), "attempts": attempts,
                **({"kept_float_matmuls": list(kept), "faster_only_with_bf16_float_parts": True} if kept else {}),
                "measured_with_int8_units": [f for f in EXACT_INT8_FEATURES if f in cpu_features()],
                "fidelity": fidelity,
            }, {"written": file, "attempts": attempts}
    xml.unlink(missing_ok=True)
    weights.unlink(missing_ok=True)
    if attempts and "error" in attempts[-1]:
        reason = f"NNCF's int8 failed at SmoothQuant alpha {attempts[-1]['smooth_alpha']}: {attempts[-1]['error']}"
    elif len(attempts) == len(plan):
        reason = "no SmoothQuant alpha passed the int8 gates on every head" + (
            ", with every MatMul int8 or with the MLP down projections (fc2) kept float" if len(stages) > 1 else "")
    else:
        reason = (f"no SmoothQuant alpha passed the int8 gates on every head within the {budget_seconds:.0f} s "
                  f"budget ({len(attempts)} of {len(plan)} tried)")
    return None, {"written": None, "reason": reason, "attempts": attempts,
                  "seconds": round(time.perf_counter() - start, 1)}
