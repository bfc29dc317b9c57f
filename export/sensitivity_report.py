"""Sensitivity of every quantizable node (restore-one and local), on the trained MiniLM and the outlier family.

    python -m colbert_onnx.export.sensitivity_report --write docs/runs/YYYY-MM-DD-sensitivity.md

Figures for docs/quantization.md ("Accuracy-aware mixed precision"): per case the pure int8 figures,
the nodes ranked by restore-one sensitivity with their local error, and how well the cheaper rankings (local,
restore-one on a sample of the set) agree with it (Spearman). Needs the [fidelity] extra for the MiniLM case.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date
from pathlib import Path

import onnx

from .fidelity import reference_outputs, spearman
from .mixed_precision import build_switchable, evaluate, restore_one_sensitivity
from .precisions import calibration_feeds, fidelity_inputs

TOP = 6


def _rows(name: str, optimized: onnx.ModelProto, calibration: list, reference: dict, fset, work: Path,
          method: str = "smooth-per-token") -> str:
    start = time.perf_counter()
    session, kinds = build_switchable(optimized, calibration, sorted(reference, reverse=True), work, method)
    base = evaluate(session.runner(set()), reference, fset)
    sensitivity = restore_one_sensitivity(session, reference, fset, base)
    local = session.local_errors(fset)
    names = sorted(kinds)
    agreement = spearman([sensitivity[n] for n in names], [local[n] for n in names])
    sampled = {every: restore_one_sensitivity(session, reference, fset, every=every) for every in (4, 0)}
    sampled_agreement = ", ".join(
        f"{'every 4th batch' if every else 'the queries only'}: Spearman "
        f"{spearman([sensitivity[n] for n in names], [values[n] for n in names]):.3f}, top {TOP} holds "
        f"{len(set(_top(values)) & set(_top(sensitivity)))}" for every, values in sampled.items())
    worst = min(m["min_token_cosine"] for m, _ in base.values())
    top_local = sorted(names, key=lambda n: -local[n])[:TOP]
    lines = [f"### {name}", "",
             f"{method}, {len(names)} quantizable nodes; pure int8 min token cosine {worst:.5f} (worst head), "
             f"passes every gate: {all(m['passed'] for m, _ in base.values())}; Spearman(restore-one, local) = "
             f"{agreement:.3f}; local's top {TOP} holds {len(set(top_local) & set(_top(sensitivity)))} of "
             f"restore-one's top {TOP}; restore-one on a sample ({sampled_agreement}); "
             f"{time.perf_counter() - start:.0f} s.", "",
             "| rank | node | kind | restore-one sensitivity | local error |", "|---|---|---|---|---|"]
    for rank, node in enumerate(_top(sensitivity), 1):
        lines.append(f"| {rank} | `{node}` | {kinds[node]} | {sensitivity[node]:.4f} | {local[node]:.4f} |")
    return "\n".join(lines) + "\n"


def _top(sensitivity: dict[str, float]) -> list[str]:
    return sorted(sensitivity, key=lambda n: -sensitivity[n])[:TOP]


def minilm_rows(work: Path) -> str:
    from .fidelity_report import trained_minilm

    case = trained_minilm(work)
    return _rows("all-MiniLM-L6-v2 (trained, 6 x 384) + random 128 head", case.optimized, case.calibration,
                 case.reference, case.fset, work)


def member_rows(member, work: Path, method: str = "smooth-per-token") -> str:
    from colbert_onnx.model_folder import open_model_folder

    from .checkpoint import load_checkpoint
    from .exporter import export_model
    from .modeling import MultiHeadColbert
    from .outlier_family import build_member

    trio = build_member(member, work / "ckpt")
    dims = sorted(trio, reverse=True)
    out = export_model([trio[d] for d in dims], work / "onnx", precisions="fp32", check_parity=False)
    folder = open_model_folder(out)
    tokenizer, special = folder.load_tokenizer()
    pre, fset = fidelity_inputs(folder.manifest, tokenizer, special)
    first = load_checkpoint(trio[dims[0]], hash_files=False)
    heads = {d: load_checkpoint(trio[d], hash_files=False).head for d in dims}
    reference = reference_outputs(MultiHeadColbert(first.module().roberta, heads), fset)
    return _rows(f"outlier family, {member.describe()}", onnx.load(str(out / "model.onnx")), calibration_feeds(pre),
                 reference, fset, work, method)


def main(argv: list[str] | None = None) -> int:
    from .outlier_family import FamilyMember, draw_member
    from .toy import OutlierSpec

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", default=None, help="markdown file to write (a dated run log)")
    parser.add_argument("--seeds", default="0,1,4", help="outlier family members (restore-one is N+1 runs each)")
    args = parser.parse_args(argv)
    parts = [f"# Sensitivity of the quantizable nodes ({date.today().isoformat()})", "",
             "`python -m colbert_onnx.export.sensitivity_report` (export/mixed_precision.py; the method is in "
             "docs/quantization.md). Restore-one: drop of the error score with that node alone in fp32; local: the "
             "node's own relative error on its input in the all-int8 graph.", ""]
    cases = [("minilm", None)] + [("member", draw_member(int(s))) for s in args.seeds.split(",") if s]
    cases += [("planted", FamilyMember(seed=5 + layer, hidden_size=104, num_hidden_layers=4, attention_calm=1.0,
                                       quiet_heads=True, dims=(128,),
                                       outliers=OutlierSpec(3, (20, 40), layers=(layer,), embedding=False)))
              for layer in (1, 2)]
    for kind, member in cases:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            if kind == "minilm":
                text = minilm_rows(work)
            elif kind == "member":
                text = member_rows(member, work)
            else:  # outliers in one layer, plain per-token: does the ranking find it?
                text = member_rows(member, work, method="per-token")
        print(text, flush=True)
        parts.append(text)
    if args.write:
        Path(args.write).write_text("\n".join(parts), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
