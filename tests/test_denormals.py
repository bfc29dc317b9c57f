"""No denormal cliff: subnormal floats are flushed in the onnxruntime engine, and the sharp-attention toy used to time
it (benchmarks/bench_engines.py, calm against sharp, with and without flushing) does drive the softmax into
subnormals (issue 25). That every thread of a run flushes is checked by what it computes, not by a timing, in
tests/test_float_environment.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from colbert_onnx.session import DENORMAL_AS_ZERO, SessionConfig, create_session

pytest.importorskip("torch", reason="generating toy checkpoints needs the [export] extra (torch)")

SHARP_FACTOR = 8.0  # q and k weights x8: ~16 % of the attention probabilities subnormal (docs/engines.md)
MEDIUM = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024}


def _checkpoint(root: Path, factor: float) -> Path:
    from colbert_onnx.export.outlier_family import sharpen_attention
    from colbert_onnx.export.toy import make_toy_trio

    trio = make_toy_trio(root / "checkpoint", seed=1, dims=(128,), config_overrides=MEDIUM)
    if factor != 1.0:
        sharpen_attention(trio, factor)
    return trio[128]


@pytest.fixture(scope="module")
def calm_and_sharp(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The medium toy's checkpoint (calm) and the same with q/k weights x8 (sharp), as bench_engines times them."""
    return {name: _checkpoint(tmp_path_factory.mktemp(name), factor)
            for name, factor in (("calm", 1.0), ("sharp", SHARP_FACTOR))}


def _entry(session) -> str:
    return session.get_session_options().get_session_config_entry(DENORMAL_AS_ZERO)


def test_sessions_flush_denormals_by_default(toy_model_dir: Path) -> None:
    assert _entry(create_session(str(toy_model_dir / "model.onnx"))) == "1"


def test_denormal_flush_can_be_turned_off(toy_model_dir: Path) -> None:
    session = create_session(str(toy_model_dir / "model.onnx"), config=SessionConfig(denormal_as_zero=False))
    assert _entry(session) == "0"


def test_encoder_sessions_flush_denormals(toy_encoder) -> None:
    assert _entry(toy_encoder.engine.session) == "1"


def _subnormal_share(checkpoint: Path, ids: np.ndarray) -> float:
    """Share of the attention probabilities (float64 logits) that fall in float32's subnormal range."""
    import torch

    from colbert_onnx.export import modeling
    from colbert_onnx.export.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    module = modeling.MultiHeadColbert(ckpt.module().roberta, {128: ckpt.head}).eval()
    shares = []
    plain = modeling.attention

    def attention(q, k, v, key_bias, scale):
        logits = (torch.matmul(q.double(), k.double().transpose(-1, -2)) * scale + key_bias).numpy()
        below_max = logits - logits.max(-1, keepdims=True)  # log of the probability before normalizing
        shares.append(float(((below_max < np.log(np.finfo(np.float32).tiny)) & (below_max > -103.97)).mean()))
        return plain(q, k, v, key_bias, scale)

    with pytest.MonkeyPatch.context() as patch, torch.no_grad():
        patch.setattr(modeling, "attention", attention)  # the plain attention path of Mixer.forward
        module(torch.from_numpy(ids), torch.ones_like(torch.from_numpy(ids)))
    return float(np.mean(shares))


def test_sharp_toy_drives_attention_into_subnormals(calm_and_sharp: dict[str, Path], toy_encoder) -> None:
    from colbert_onnx.export.corpus import multilingual_texts

    text = " ".join(multilingual_texts() * 20)
    ids = toy_encoder.tokenize([text], "document").ids[0][:512][None].astype(np.int64)  # the toys' one vocabulary
    assert ids.shape == (1, 512)
    assert _subnormal_share(calm_and_sharp["sharp"], ids) > 0.05
    assert _subnormal_share(calm_and_sharp["calm"], ids) == 0.0
