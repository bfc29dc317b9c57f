"""`make bench-gpu`: fp32 and fp16 graphs on the onnxruntime CUDA provider (IOBinding) against PyTorch
eager on the same GPU, full-size architecture with random weights: throughput, query latency,
fidelity to the fp32 PyTorch reference, and one 8192-token document (finite, memory).

Both attention layouts of the export are measured: the default (com.microsoft.MultiHeadAttention, unmasked
or in an If/Loop of query steps: bounded memory) and plain (``attention_chunk=None``). Writes a JSON file;
docs/gpu.md holds the figures. ``--device cpu --size small`` runs the same code without a GPU (a dry run).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.conftest import interleaved_medians, random_ids
from benchmarks.machine import describe
from benchmarks.sizes import SIZES
from colbert_onnx.export.exporter import ATTENTION_CHUNK

ROOT = Path(__file__).resolve().parent.parent
ALL_VARIANTS = {"chunked": ATTENTION_CHUNK, "plain-attention": None}  # export name -> attention_chunk
VARIANTS = dict(ALL_VARIANTS)  # narrowed by --variants
PRECISIONS = ("fp32", "fp16")


def _gpu_used_mib() -> float | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
        return float(out.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _export_variant(checkpoint: Path, folder: Path, attention_chunk: int | None) -> float:
    from colbert_onnx.export import export_model

    start = time.perf_counter()
    export_model([checkpoint], folder, check_parity=False, precisions="fp32,fp16", attention_chunk=attention_chunk)
    return time.perf_counter() - start


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = args.device
        self.base = Path(args.models) / f"bench-gpu-{args.size}"
        self.ckpt = self.base / "checkpoint" / "jina-colbert-v2-toy"
        self._encoders: dict = {}
        self._torch = None
        self.results: dict = {"size": args.size, "device": args.device, "machine": self._machine(), "stages": {}}

    def _machine(self) -> dict:
        info = {"cpu": describe(), "day": time.strftime("%Y-%m-%d")}
        try:
            info["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                         capture_output=True, text=True, timeout=20).stdout.strip()
        except OSError:
            info["gpu"] = None
        import onnxruntime as ort
        import torch

        info.update(onnxruntime=ort.__version__, providers=ort.get_available_providers(), torch=torch.__version__)
        return info

    def save(self) -> None:
        Path(self.args.json).write_text(json.dumps(self.results, indent=1, default=float))

    def stage(self, name: str, fn: Callable[[], dict]) -> None:
        start = time.perf_counter()
        try:
            self.results["stages"][name] = {**fn(), "seconds": round(time.perf_counter() - start, 1)}
        except Exception as exc:  # keep what the other stages measured
            import traceback

            traceback.print_exc()
            self.results["stages"][name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        print(name, json.dumps(self.results["stages"][name], default=float)[:3000], flush=True)
        self.save()

    # -- stages ---------------------------------------------------------------------------------
    def export(self) -> dict:
        """The checkpoint (once) and one export per attention layout, the layouts in parallel processes."""
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        from colbert_onnx.export import make_toy_trio

        out = {}
        if not (self.ckpt / "model.safetensors").is_file():
            start = time.perf_counter()
            make_toy_trio(self.base / "checkpoint", dims=(128,), config_overrides=SIZES[self.args.size])
            out["checkpoint_s"] = time.perf_counter() - start
        todo = {name: chunk for name, chunk in VARIANTS.items() if not (self.base / name / "manifest.json").is_file()}
        with ProcessPoolExecutor(max_workers=len(todo) or 1, mp_context=get_context("spawn")) as pool:
            futures = {name: pool.submit(_export_variant, self.ckpt, self.base / name, chunk)
                       for name, chunk in todo.items()}
            out.update({f"{name}_export_s": f.result() for name, f in futures.items()})
        return out

    def torch_module(self):
        """The fp32 PyTorch module of the checkpoint on the bench device, loaded once."""
        if self._torch is None:
            self._torch = self._load_torch_module()
        return self._torch

    def _load_torch_module(self):
        import torch

        from colbert_onnx.export import load_checkpoint
        from colbert_onnx.export.modeling import MultiHeadColbert

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        ckpt = load_checkpoint(self.ckpt, hash_files=False)
        return MultiHeadColbert(ckpt.module().roberta, {ckpt.dim: ckpt.head}).eval().to(self.device)

    def torch_run(self, module, autocast: bool = False) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """PyTorch eager; autocast=True is what a PyTorch user does for half precision (fp16 on
        CUDA, bf16 on CPU where fp16 autocast is slow)."""
        import torch

        half = torch.float16 if self.device == "cuda" else torch.bfloat16

        def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            with torch.inference_mode(), torch.autocast(self.device, dtype=half, enabled=autocast):
                out = module(torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device))[0]
                return out.float().cpu().numpy()

        return run

    def encoder(self, variant: str, precision: str, **kwargs):
        from colbert_onnx import ColbertEncoder

        return ColbertEncoder(self.base / variant, precision=precision, device=self.device, **kwargs)

    def cached(self, variant: str, precision: str, io_binding: bool | None = None):
        """The encoder of one graph, kept for the next call (a full-size session takes seconds to load)."""
        from colbert_onnx.session import SessionConfig

        key = (variant, precision, io_binding)
        if key not in self._encoders:
            self.free_cached()  # one full-size session on the card at a time
            self._encoders[key] = self.encoder(variant, precision, max_batch_tokens=None, io_binding=io_binding,
                                               session_options=SessionConfig(arena_extend_strategy="kSameAsRequested"))
        return self._encoders[key]

    def free_cached(self) -> None:
        self._encoders.clear()
        gc.collect()
        self._empty_torch_cache()

    def fidelity(self) -> dict:
        from tokenizers import Tokenizer

        from colbert_onnx.conventions import SpecialIds
        from colbert_onnx.export.fidelity import collect, compare, passes
        from colbert_onnx.export.precisions import fidelity_inputs

        folder = self.base / next(iter(VARIANTS))
        manifest = json.loads((folder / "manifest.json").read_text())
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        _, fset = fidelity_inputs(manifest, tokenizer, SpecialIds.from_tokenizer(tokenizer))

        def as_runner(run):
            return lambda feeds: {128: run(feeds["input_ids"], feeds["attention_mask"])}

        reference = collect(as_runner(self._engine("torch-fp32")), fset)[128]
        out = {}
        for name in ("torch-autocast-fp16", *(f"{v}-{p}" for v in VARIANTS for p in PRECISIONS)):
            metrics = compare(reference, collect(as_runner(self._engine(name)), fset)[128])
            metrics["passed"] = passes("fp16" if name.endswith("fp16") else "fp32", metrics)
            out[name] = metrics
        self.free_cached()
        return out

    def throughput(self) -> dict:
        """Tokens/s per engine and length. Engines are loaded one at a time and timed in sequence (a
        dedicated GPU does not drift like a shared CPU): five full-size sessions plus PyTorch held at
        once ran the 80 GB card out of memory (2026-11-25)."""
        batches = {512: 64, 128: 64, 2048: 16}
        feeds = {}
        for length in (int(x) for x in self.args.lengths.split(",")):
            batch = batches.get(length, max(1, 32768 // length))
            if self.args.size == "small" or self.device == "cpu":
                batch = max(1, batch // 16)
            feeds[f"{batch}x{length}"] = random_ids(length, batch)
        engines = ["torch-fp32", "torch-autocast-fp16", *(f"{v}-{p}" for v in VARIANTS for p in PRECISIONS),
                   f"{next(iter(VARIANTS))}-fp16-no-iobinding"]
        seconds: dict[str, dict[str, float]] = {key: {} for key in feeds}
        for engine in engines:
            try:
                run = self._engine(engine)
                for key, (ids, mask) in feeds.items():
                    timed = interleaved_medians({engine: partial(run, ids, mask)}, rounds=self.args.rounds)
                    seconds[key][engine] = timed[engine]
            except Exception as exc:  # one engine failing (e.g. out of GPU memory) keeps the others' rows
                print(f"{engine}: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
            run = None
            self.free_cached()
        out = {}
        for key, (ids, _) in feeds.items():
            base = seconds[key].get("torch-fp32")
            out[key] = {name: {"tokens_per_s": ids.size / s, "ms": 1e3 * s, "vs_torch_fp32": base / s if base else None}
                        for name, s in seconds[key].items()}
        return out

    def _engine(self, name: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        if name.startswith("torch-"):
            return self.torch_run(self.torch_module(), autocast=name == "torch-autocast-fp16")
        self._torch = None  # PyTorch's weights and cache off the card while onnxruntime runs
        self._empty_torch_cache()
        if name.endswith("-no-iobinding"):
            variant, precision = name.removesuffix("-no-iobinding").rsplit("-", 1)
            return self.cached(variant, precision, io_binding=False)._run
        variant, precision = name.rsplit("-", 1)
        return self.cached(variant, precision)._run

    def _empty_torch_cache(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.empty_cache()

    def queries(self) -> dict:
        queries = [f"what is the population of city number {i}?" for i in range(32)]
        out = {}
        for variant in VARIANTS:
            for precision in PRECISIONS:
                enc = self.cached(variant, precision)
                enc.batch_size = 32
                singles = []
                for q in queries * 3:
                    start = time.perf_counter()
                    enc.encode_queries([q])
                    singles.append(time.perf_counter() - start)
                singles = singles[32:]
                batched = interleaved_medians({"b": lambda e=enc: e.encode_queries(queries)}, rounds=5)["b"]
                loop = float(np.sum(singles[:32]))
                out[f"{variant}-{precision}"] = {
                    "p50_ms": 1e3 * float(np.percentile(singles, 50)),
                    "p95_ms": 1e3 * float(np.percentile(singles, 95)),
                    "batch32_ms": 1e3 * batched, "loop32_ms": 1e3 * loop, "speedup": loop / batched}
        return out

    def long_document(self) -> dict:
        """One 8192-token document per graph: cold and warm seconds, finiteness, GPU memory the
        session added, and token cosine against the fp32 PyTorch module on the same ids."""
        self.free_cached()  # fresh sessions: their arenas are what the long run adds
        length = 8192 if self.args.size == "full" else 2048
        text = " ".join(["Berlin Paris Tokyo Lagos Lima"] * (length // 2))
        out: dict = {}
        vectors = {}
        framing = None
        for variant in VARIANTS:
            for precision in PRECISIONS:
                name = f"{variant}-{precision}"
                gc.collect()
                before = _gpu_used_mib()
                try:
                    enc = self.encoder(variant, precision, document_max_length=length)
                    framing = framing or (enc.preprocessor.documents([text]).ids[0], enc._skiplist)
                    start = time.perf_counter()
                    (v,) = enc.encode_documents([text])
                    cold = time.perf_counter() - start
                    start = time.perf_counter()
                    enc.encode_documents([text])
                    warm = time.perf_counter() - start
                    after = _gpu_used_mib()
                    vectors[name] = v
                    out[name] = {"tokens": int(v.shape[0]), "cold_s": cold, "warm_s": warm,
                                 "finite": bool(np.isfinite(v).all()),
                                 "gpu_mib_added": None if before is None or after is None else after - before}
                    del enc
                except Exception as exc:
                    out[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        if framing is None:
            return out
        ids, skiplist = framing
        reference = self.torch_run(self.torch_module())(ids[None, :], np.ones_like(ids[None, :]))[0]
        reference = reference[~np.isin(ids, skiplist)]
        out["framed_tokens"] = int(len(ids))
        for name, v in vectors.items():
            if v.shape == reference.shape:
                cos = np.sum(v * reference, axis=-1)
                out[name].update(cos_mean=float(cos.mean()), cos_min=float(cos.min()))
        return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--models", default=str(ROOT / "models"))
    parser.add_argument("--json", default=str(ROOT / "models" / "bench-gpu.json"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", default=",".join(ALL_VARIANTS),
                        help="attention layouts to export and time (chunked: ~4.5 min to export there)")
    parser.add_argument("--lengths", default="512,128,2048", help="document lengths to time (batch 64 at 512)")
    parser.add_argument("--stages", default="export,fidelity,throughput,queries,long")
    args = parser.parse_args(argv)
    VARIANTS.clear()
    VARIANTS.update({name: ALL_VARIANTS[name] for name in args.variants.split(",")})
    bench = Bench(args)
    print(json.dumps(bench.results["machine"]), flush=True)
    stages = {"export": bench.export, "fidelity": bench.fidelity, "throughput": bench.throughput,
              "queries": bench.queries, "long": bench.long_document}
    for name in args.stages.split(","):
        bench.stage(name, stages[name])


if __name__ == "__main__":
    main()
