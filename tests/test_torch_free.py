"""The runtime (API and CLI) works in a process where importing torch, transformers or optimum fails."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers", "optimum"):
                raise ImportError(f"{name} is blocked: the runtime must not import it")
            return None

    sys.meta_path.insert(0, Block())
    """
)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_blocker_really_blocks_torch():
    proc = _run("import torch")
    assert proc.returncode != 0 and "blocked" in proc.stderr


def test_runtime_encodes_and_reranks_without_torch(toy_model_dir):
    proc = _run(
        f"""
        import colbert_onnx
        enc = colbert_onnx.ColbertEncoder({str(toy_model_dir)!r}, dim=64)
        assert enc.encode_queries(["q"])[0].shape == (32, 64)
        assert enc.encode_documents(["a b c"])[0].shape[1] == 64
        print(enc.rerank("q", ["a", "b"])[0]["index"])
        assert not any(m.split(".")[0] in ("torch", "transformers", "optimum") for m in sys.modules)
        """
    )
    assert proc.returncode == 0, proc.stderr


def test_cli_rerank_runs_without_torch(toy_model_dir):
    proc = _run(
        f"""
        from colbert_onnx.cli import main
        sys.exit(main(["rerank", {str(toy_model_dir)!r}, "--query", "Berlin", "-d", "Berlin", "-d", "Paris"]))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert '"results"' in proc.stdout


def test_cli_export_without_torch_explains_the_extra():
    proc = _run(
        """
        from colbert_onnx.cli import main
        sys.exit(main(["export", "x", "--out", "y"]))
        """
    )
    assert proc.returncode == 2
    assert "[export] extra" in proc.stderr
