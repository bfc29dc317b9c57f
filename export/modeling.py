"""jina-colbert-v2 in plain PyTorch: XLM-RoBERTa with rotary positions plus linear ColBERT heads.

Written from the public model code (jinaai/xlm-roberta-flash-implementation) without remote code,
flash_attn or einops. Module names mirror the checkpoint's state-dict names so weights load 1:1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# The reference implementation adds this to the attention logits of padded keys.
MASKED_LOGIT = -10000.0
# Attention scores (batch x heads x queries x seq) one fused step may hold: 256 MB in fp32.
ATTENTION_BUDGET = 2**26


@dataclass(frozen=True)
class BackboneConfig:
    """The config.json fields the architecture depends on."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    rotary_emb_base: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def key_bias_of(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, 1, 1, seq) additive attention bias: 0 for real keys, MASKED_LOGIT for padding."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * MASKED_LOGIT


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_bias: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale + key_bias) v on (batch, heads, seq, head_dim) tensors.

    Run eagerly (the float64 reference, the fp32 module), PyTorch's fused kernel computes it without the scores'
    intermediate passes: 4x faster than the three-step form on a 2048-token document in float64 and in float32, within
    2e-15 of it in float64 (docs/export.md). Traced into a graph, it stays the three steps: PyTorch's ONNX form of the
    fused kernel scales q and k by sqrt(scale) each, which would change the plain and OpenVINO graphs."""
    if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
        return torch.matmul(torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * scale + key_bias, dim=-1), v)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=key_bias, scale=scale)


class FusedAttention(torch.autograd.Function):
    """Multi-head attention over (batch, seq, hidden) heads-major rows, for the ONNX export.

    PyTorch computes the same math as `attention`, `min_step` queries at a time; the export writes one
    colbert::ChunkedAttention placeholder per layer, which export/attention.py expands into
    onnxruntime's fused MultiHeadAttention, run in query steps that keep batch x heads x queries x seq
    scores within `budget` (so an 8192-token document does not need the 4.3 GB score matrix).
    """

    @staticmethod
    def forward(ctx, q, k, v, attention_mask, num_heads: int, scale: float, min_step: int, budget: int):
        batch, seq, hidden = q.shape
        q, k, v = (t.view(batch, seq, num_heads, hidden // num_heads).transpose(1, 2) for t in (q, k, v))
        key_bias = key_bias_of(attention_mask, q.dtype)
        context = torch.cat([attention(q[:, :, s : s + min_step], k, v, key_bias, scale)
                             for s in range(0, seq, min_step)], dim=2)
        return context.transpose(1, 2).reshape(batch, seq, hidden)

    @staticmethod
    def symbolic(g, q, k, v, attention_mask, num_heads: int, scale: float, min_step: int, budget: int):
        from .attention import PLACEHOLDER_DOMAIN, PLACEHOLDER_OP

        mask = g.op("Cast", attention_mask, to_i=6)  # int32 key padding mask, as MultiHeadAttention takes it
        return g.op(
            f"{PLACEHOLDER_DOMAIN}::{PLACEHOLDER_OP}", q, k, v, mask, num_heads_i=num_heads, min_step_i=min_step,
            budget_i=budget, scale_f=scale, mask_filter_value_f=MASKED_LOGIT,
        ).setType(q.type())


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """GPT-NeoX (non-interleaved) rotation: cat(-x2, x1)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rotary(x: torch.Tensor, cos_half: torch.Tensor, sin_half: torch.Tensor, num_heads: int) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin per head of (batch, seq, hidden) rows, from (seq, head_dim / 2) tables."""
    batch, seq, hidden = x.shape
    heads = x.view(batch, seq, num_heads, hidden // num_heads)
    cos = torch.cat((cos_half, cos_half), dim=-1)[:, None, :]
    sin = torch.cat((sin_half, sin_half), dim=-1)[:, None, :]
    return (heads * cos + rotate_half(heads) * sin).reshape(batch, seq, hidden)


class RotaryEmbedding(torch.autograd.Function):
    """x * cos + rotate_half(x) * sin on (batch, seq, hidden) heads-major rows, from half-width tables.

    PyTorch computes it plainly; the ONNX export writes one com.microsoft.RotaryEmbedding node
    (onnxruntime's fused kernel, CPU and CUDA) instead of the ~10 Slice/Neg/Concat/Mul/Add nodes
    per q and k that neither onnxruntime's optimizer nor its rotary fusion recognise (docs/export.md).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, cos_half: torch.Tensor, sin_half: torch.Tensor, num_heads: int):
        return rotary(x, cos_half, sin_half, num_heads)

    @staticmethod
    def symbolic(g, x, cos_half, sin_half, num_heads: int):
        offset = g.op("Constant", value_t=torch.tensor([0], dtype=torch.int64))  # positions 0..seq-1
        # No num_heads attribute needed: onnxruntime derives head_dim from the table width (head_dim / 2).
        return g.op("com.microsoft::RotaryEmbedding", x, offset, cos_half, sin_half, interleaved_i=0).setType(x.type())


class Mixer(nn.Module):
    """Multi-head self-attention with one fused q|k|v projection and rotary q/k."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.head_dim
        self.attention_chunk: int | None = None  # None: plain attention ops; else FusedAttention steps
        self.attention_budget = ATTENTION_BUDGET
        self.fused_rotary = True  # False: export the rotation as plain ops (the baseline benchmarks use)
        self.Wqkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, key_bias: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        batch, seq, hidden = x.shape
        q, k, v = self.Wqkv(x).split(self.num_heads * self.head_dim, dim=-1)  # each (batch, seq, hidden)
        rotate = RotaryEmbedding.apply if self.fused_rotary else rotary
        q, k = rotate(q, cos, sin, self.num_heads), rotate(k, cos, sin, self.num_heads)
        if self.attention_chunk is not None:
            context = FusedAttention.apply(q, k, v, attention_mask, self.num_heads, 1.0 / math.sqrt(self.head_dim),
                                           self.attention_chunk, self.attention_budget)
            return self.out_proj(context)
        q, k, v = (t.view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        context = attention(q, k, v, key_bias, 1.0 / math.sqrt(self.head_dim))
        return self.out_proj(context.transpose(1, 2).reshape(batch, seq, hidden))


class Mlp(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class Block(nn.Module):
    """Post-norm transformer block."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.mixer = Mixer(cfg)
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = Mlp(cfg)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, key_bias: torch.Tensor,
                attention_mask: torch.Tensor):
        x = self.norm1(x + self.mixer(x, cos, sin, key_bias, attention_mask))
        return self.norm2(x + self.mlp(x))


class Embeddings(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # No absolute positions: position information comes from rotary q/k only.
        return self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0]


class Encoder(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))


def set_fused_rotary(module: nn.Module, fused: bool) -> None:
    """Export q/k rotation as one com.microsoft.RotaryEmbedding (True, default) or as plain ONNX ops."""
    for layer in module.modules():
        if isinstance(layer, Mixer):
            layer.fused_rotary = fused


def set_attention_chunk(module: nn.Module, chunk: int | None, budget: int = ATTENTION_BUDGET) -> None:
    """Export attention as fused steps of at least `chunk` queries within `budget` scores, or plain ops (None)."""
    for layer in module.modules():
        if isinstance(layer, Mixer):
            layer.attention_chunk = chunk
            layer.attention_budget = budget


class Backbone(nn.Module):
    """XLM-RoBERTa with rotary positions; state-dict names as under `roberta.` in the checkpoint."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.emb_ln = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.encoder = Encoder(cfg)
        inv_freq = 1.0 / (
            cfg.rotary_emb_base ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim)
        )
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def rotary_tables(self, seq_len: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin of shape (seq, head_dim / 2) for positions 0..seq-1, built in float32.

        Also in a float64 evaluation (`module.double()`): the reference model defines the tables in
        float32 (`pos_idx_in_fp32`), so float64 runs use those float32 values, upcast where they meet q/k.
        """
        positions = torch.arange(seq_len, dtype=torch.float32, device=self.inv_freq.device)
        freqs = torch.outer(positions, self.inv_freq.float())
        return freqs.cos(), freqs.sin()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.emb_ln(self.embeddings(input_ids))
        cos, sin = self.rotary_tables(input_ids.shape[1])
        key_bias = key_bias_of(attention_mask, x.dtype)
        for layer in self.encoder.layers:
            x = layer(x, cos, sin, key_bias, attention_mask)
        return x


class ColbertModel(nn.Module):
    """One checkpoint: backbone (`roberta.*`) plus its ColBERT head (`linear.weight`)."""

    def __init__(self, cfg: BackboneConfig, dim: int) -> None:
        super().__init__()
        self.roberta = Backbone(cfg)
        self.linear = nn.Linear(cfg.hidden_size, dim, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, seq, dim) L2-normalized token vectors."""
        return F.normalize(self.linear(self.roberta(input_ids, attention_mask)), p=2, dim=-1)


class MultiHeadColbert(nn.Module):
    """One shared backbone with several heads: one forward gives every head's normalized vectors.

    This is what gets exported, so that 128/96/64 checkpoints with a byte-identical backbone cost
    the disk (and the compute) of one.
    """

    def __init__(self, backbone: Backbone, heads: dict[int, torch.Tensor]) -> None:
        super().__init__()
        self.backbone = backbone
        self.dims = sorted(heads, reverse=True)
        self.heads = nn.ModuleList()
        for d in self.dims:
            layer = nn.Linear(backbone.cfg.hidden_size, d, bias=False)
            layer.weight = nn.Parameter(heads[d].detach().clone(), requires_grad=False)
            self.heads.append(layer)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden = self.backbone(input_ids, attention_mask)
        return tuple(F.normalize(head(hidden), p=2, dim=-1) for head in self.heads)
