"""Build the first-contact fixtures in the full environment (needs the [export] extra: torch, onnx).

Writes into OUT: the toy 128/96/64 trio exported with fp32,int8,fp16 (``toy-onnx/``), every
reference case's outputs (``references.npz``), the PyTorch fp32 vectors of each head
(``torch-references.npz``) and the CLI's stdout per command (``cli.json``). The clean-venv tests
(first_contact/test_*.py) recompute them with `pip install .` alone and compare.

    python first_contact/build_references.py --out build/first-contact/data
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import reference_cases as rc


def _torch_references(checkpoints: dict[int, Path], model_dir: Path) -> dict[str, np.ndarray]:
    """Per head, the PyTorch fp32 module's vectors of rc.QUERIES and rc.DOCUMENTS (framed by the runtime)."""
    import torch

    from colbert_onnx.export import load_checkpoint

    enc = rc.encoder(model_dir, 128)
    query_ids = torch.from_numpy(enc.preprocessor.queries(rc.QUERIES))
    documents = enc.preprocessor.documents(rc.DOCUMENTS).ids
    out: dict[str, np.ndarray] = {}
    for dim, folder in checkpoints.items():
        module = load_checkpoint(folder, hash_files=False).module()
        with torch.no_grad():
            out[f"{dim}/queries"] = module(query_ids, torch.ones_like(query_ids)).numpy()
            docs = []
            for ids in documents:
                t = torch.from_numpy(ids[None])
                vectors = module(t, torch.ones_like(t))[0].numpy()
                docs.append(vectors[~np.isin(ids, enc._skiplist)])
        out.update({f"{dim}/{k}": v for k, v in rc.ragged("documents", docs).items()})
    return out


def _cli_references(model_dir: Path) -> dict[str, dict]:
    """The full environment's `colbert-onnx` stdout for each rc.CLI_CASES command."""
    found = {}
    for name, case in rc.CLI_CASES.items():
        proc = subprocess.run([sys.executable, "-m", "colbert_onnx.cli", *rc.cli_args(name, model_dir)],
                              input=case["stdin"], capture_output=True, text=True, timeout=300, check=True)
        found[name] = {"stdout": proc.stdout}
    return found


def build(out: Path) -> Path:
    """Write every fixture into `out` (replaced if present); returns `out`."""
    from colbert_onnx.export import export_model, make_toy_trio

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    checkpoints = make_toy_trio(out / "checkpoints")
    model_dir = export_model([checkpoints[d] for d in rc.HEADS], out / rc.MODEL_FOLDER, precisions="fp32,int8,fp16")
    references = {}
    for case in rc.cases():
        references.update({f"{case.name}/{k}": v for k, v in case.compute(model_dir).items()})
    np.savez(out / rc.REFERENCES, **references)
    np.savez(out / rc.TORCH_REFERENCES, **_torch_references(checkpoints, model_dir))
    (out / rc.CLI_REFERENCES).write_text(json.dumps(_cli_references(model_dir), indent=1), encoding="utf-8")
    shutil.rmtree(out / "checkpoints")  # the clean venvs need the exported folder only
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to (re)create")
    args = parser.parse_args()
    start = time.perf_counter()
    build(args.out)
    print(f"first-contact fixtures in {args.out} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
