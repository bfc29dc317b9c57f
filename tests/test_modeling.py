"""The PyTorch re-implementation against an independent float64 numpy reading of the public model code."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch reference is part of the [export] extra")
from colbert_onnx.export import load_checkpoint  # noqa: E402


def _layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def numpy_reference(ckpt, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Embeddings + emb_ln, post-norm blocks, NeoX rotary (fp32 tables), -10000 key mask, head, L2 norm."""
    s = {k: v.double().numpy() for k, v in ckpt.backbone_state.items()}
    cfg = ckpt.backbone_config
    heads, hd = cfg.num_attention_heads, cfg.head_dim
    x = s["embeddings.word_embeddings.weight"][ids] + s["embeddings.token_type_embeddings.weight"][0]
    x = _layer_norm(x, s["emb_ln.weight"], s["emb_ln.bias"], cfg.layer_norm_eps)
    b, n, h = x.shape
    inv_freq = 1.0 / (np.float32(cfg.rotary_emb_base) ** (np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd)))
    ang = np.outer(np.arange(n, dtype=np.float32), inv_freq.astype(np.float32))
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))

    def rot(t):
        return t * cos + np.concatenate([-t[..., hd // 2 :], t[..., : hd // 2]], -1) * sin

    bias = (1.0 - mask[:, None, None, :]) * -10000.0
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layers.{i}."
        qkv = x @ s[p + "mixer.Wqkv.weight"].T + s[p + "mixer.Wqkv.bias"]
        qkv = qkv.reshape(b, n, 3, heads, hd)
        q, k, v = (qkv[:, :, j].transpose(0, 2, 1, 3) for j in range(3))
        logits = rot(q) @ rot(k).transpose(0, 1, 3, 2) / math.sqrt(hd) + bias
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, n, h)
        x = _layer_norm(x + ctx @ s[p + "mixer.out_proj.weight"].T + s[p + "mixer.out_proj.bias"],
                        s[p + "norm1.weight"], s[p + "norm1.bias"], cfg.layer_norm_eps)
        mlp = _gelu(x @ s[p + "mlp.fc1.weight"].T + s[p + "mlp.fc1.bias"]) @ s[p + "mlp.fc2.weight"].T
        x = _layer_norm(x + mlp + s[p + "mlp.fc2.bias"], s[p + "norm2.weight"], s[p + "norm2.bias"],
                        cfg.layer_norm_eps)
    out = x @ ckpt.head.double().numpy().T
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def test_module_matches_independent_numpy_reference(toy_trio):
    ckpt = load_checkpoint(toy_trio[128])
    ids = np.array([[0, 617, 40, 41, 42, 43, 44, 2], [0, 617, 50, 51, 2, 1, 1, 1]])
    mask = (np.arange(8)[None] < np.array([[8], [5]])).astype(np.int64)
    with torch.no_grad():
        got = ckpt.module()(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    want = numpy_reference(ckpt, ids, mask)
    real = mask.astype(bool)
    assert np.abs(got[real] - want[real]).max() < 1e-5


def test_right_padding_does_not_change_real_token_vectors(toy_trio):
    model = load_checkpoint(toy_trio[64]).module()
    ids = torch.tensor([[0, 618, 30, 31, 32, 2]])
    padded = torch.cat([ids, torch.ones((1, 4), dtype=torch.int64)], dim=1)
    with torch.no_grad():
        alone = model(ids, torch.ones_like(ids))
        with_pad = model(padded, (padded != 1).long())
    assert torch.allclose(alone[0], with_pad[0, :6], atol=1e-6)


def test_rotary_makes_vectors_depend_on_position(toy_trio):
    model = load_checkpoint(toy_trio[64]).module()
    ids = torch.tensor([[0, 618, 30, 30, 2]])
    with torch.no_grad():
        out = model(ids, torch.ones_like(ids))
    assert not torch.allclose(out[0, 2], out[0, 3], atol=1e-4)


# --- attention: the fused kernel eagerly, the three steps in a graph ---------------------------------------------


def _attention_case(seed: int, sharpness: float, dtype=torch.float64):
    """q, k, v (2 x 3 heads x 7 tokens x 8) and a key bias masking the second row's last 3 keys."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g, dtype=dtype) * s for s in (sharpness, sharpness, 1.0))
    mask = torch.ones(2, 7, dtype=torch.int64)
    mask[1, 4:] = 0
    from colbert_onnx.export.modeling import key_bias_of

    return q, k, v, key_bias_of(mask, dtype)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("sharpness", [1.0, 8.0])
def test_eager_attention_equals_the_three_step_form_in_float64(seed: int, sharpness: float) -> None:
    from colbert_onnx.export.modeling import attention

    q, k, v, bias = _attention_case(seed, sharpness)
    plain = torch.matmul(torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * 0.35 + bias, dim=-1), v)
    assert torch.allclose(attention(q, k, v, bias, 0.35), plain, rtol=0, atol=1e-12)


def test_attention_traces_as_one_scaled_score_matrix_softmax_and_matmuls(tmp_path) -> None:
    """The graphs keep the three-step form (one Mul on the scores): PyTorch's ONNX form of its fused kernel scales q
    and k by sqrt(scale) each, which would change the plain and OpenVINO graphs."""
    onnx = pytest.importorskip("onnx")
    from colbert_onnx.export.modeling import attention

    class Attention(torch.nn.Module):
        def forward(self, q, k, v, bias):
            return attention(q, k, v, bias, 0.35)

    torch.onnx.export(Attention(), _attention_case(0, 1.0, torch.float32), str(tmp_path / "a.onnx"), dynamo=False,
                      opset_version=17)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "a.onnx")).graph.node if n.op_type != "Constant"]
    assert sorted(ops) == ["Add", "MatMul", "MatMul", "Mul", "Softmax", "Transpose"], ops
