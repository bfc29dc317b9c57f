"""Peak RSS of encoding one 8192-token document, per precision (docs/memory.md).

The attention peak is per layer (layers run one after another), so a 2-layer model at full width
(1024 hidden, 16 heads, 4096 FFN, vocab 250004) shows the same activation peak as the 24-layer
model at 1/12 of the compute; the full model's peak is its weights plus that same activation peak.
Usage: python -m benchmarks.memory [--tokens 8192] [--precisions fp32,int8] [--layers 24]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = {"hidden_size": 1024, "num_hidden_layers": 2, "num_attention_heads": 16, "intermediate_size": 4096,
          "vocab_size": 250004}

CHILD = """
import json, sys, time
import numpy as np
from colbert_onnx import ColbertEncoder

def hwm_kib():
    # VmHWM is this process's own peak; ru_maxrss would carry the parent's peak across exec.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

folder, precision, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
base = hwm_kib()
enc = ColbertEncoder(folder, precision=precision, document_max_length=tokens, threads=2)
loaded = hwm_kib()
body = tokens - 3
ids = np.concatenate([[0, enc.preprocessor.special.document_marker],
                      np.random.default_rng(0).integers(5, 500, body), [2]]).astype(np.int64)[None]
start = time.perf_counter()
out = enc._run(ids, np.ones_like(ids))
elapsed = time.perf_counter() - start
peak = hwm_kib()
print(json.dumps({"precision": precision, "tokens": tokens, "rss_before_mib": base / 1024,
                  "rss_loaded_mib": loaded / 1024, "peak_rss_mib": peak / 1024, "seconds": elapsed,
                  "finite": bool(np.isfinite(out).all())}))
"""


def build(folder: Path, precisions: str, layers: int) -> Path:
    from colbert_onnx.export import export_model, make_toy_trio

    ckpt = folder / "checkpoint" / "jina-colbert-v2-toy"
    out = folder / "onnx"
    if not (ckpt / "model.safetensors").is_file():
        make_toy_trio(folder / "checkpoint", dims=(128,), config_overrides={**CONFIG, "num_hidden_layers": layers})
    if not (out / "manifest.json").is_file():
        export_model([ckpt], out, check_parity=False, precisions=precisions)
    return out


def measure(out: Path, precision: str, tokens: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(out), precision, str(tokens)],
                          capture_output=True, text=True, timeout=3000)
    if proc.returncode != 0:
        return {"precision": precision, "tokens": tokens, "error": proc.stderr.strip()[-500:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    manifest = json.loads((out / "manifest.json").read_text())
    graph = next(g for g in manifest["graphs"] if g["precision"] == precision)
    result["graph_mib"] = graph["bytes"] / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--layers", type=int, default=2, help="24 for the full model (12x the compute)")
    parser.add_argument("--folder", default=None, help="default: models/mem-<layers>layer")
    args = parser.parse_args()
    folder = Path(args.folder or ROOT / "models" / f"mem-{args.layers}layer")
    out = build(folder, args.precisions, args.layers)
    for precision in args.precisions.split(","):
        print(json.dumps(measure(out, precision, args.tokens)), flush=True)


if __name__ == "__main__":
    main()
