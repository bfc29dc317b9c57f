"""Export defects the parity gate must catch: each turns the module about to be exported (or the manifest
about to be written) into a subtly wrong one, while the float64 reference stays the checkpoint's own.

They are the bugs an exporter of this model can really have (a rotary base misread, a head stored
transposed or assumed to be a truncation of the 128 head, a LayerNorm's tensors swapped, a layer lost,
the markers swapped, the key padding mask dropped, GELU approximated) and serve the tests and the
parity sweep (benchmarks/parity_sweep.py) that show the gate catches every one, whatever the CPU.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from colbert_onnx.manifest import Manifest

from .modeling import Mlp, MultiHeadColbert

ModuleDefect = Callable[[MultiHeadColbert], nn.Module]


def wrong_rotary_base(module: MultiHeadColbert, base: float = 20000.0) -> nn.Module:
    """Rotary frequencies from base 20000 instead of the config's 10000."""
    broken = copy.deepcopy(module)
    backbone = broken.backbone
    head_dim = backbone.cfg.head_dim
    backbone.inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    return broken


def head_transposed(module: MultiHeadColbert) -> nn.Module:
    """The largest head's [dim, hidden] matrix read in the wrong order (its transpose, reshaped back)."""
    broken = copy.deepcopy(module)
    weight = broken.heads[0].weight
    broken.heads[0].weight = nn.Parameter(weight.detach().t().reshape(weight.shape).contiguous(), requires_grad=False)
    return broken


def heads_truncated(module: MultiHeadColbert) -> nn.Module:
    """Every smaller head replaced by the leading rows of the largest one (assuming Matryoshka truncation)."""
    broken = copy.deepcopy(module)
    largest = broken.heads[0].weight.detach()
    for dim, head in zip(broken.dims[1:], broken.heads[1:], strict=True):
        head.weight = nn.Parameter(largest[:dim].clone(), requires_grad=False)
    return broken


def layernorm_swapped(module: MultiHeadColbert) -> nn.Module:
    """The gain and bias of the middle layer's first LayerNorm swapped."""
    broken = copy.deepcopy(module)
    layers = broken.backbone.encoder.layers
    norm = layers[len(layers) // 2].norm1
    norm.weight, norm.bias = norm.bias, norm.weight
    return broken


def layer_skipped(module: MultiHeadColbert) -> nn.Module:
    """The middle encoder layer left out."""
    broken = copy.deepcopy(module)
    layers = list(broken.backbone.encoder.layers)
    del layers[len(layers) // 2]
    broken.backbone.encoder.layers = nn.ModuleList(layers)
    return broken


class _TanhGeluMlp(Mlp):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def gelu_tanh(module: MultiHeadColbert) -> nn.Module:
    """GELU by its tanh approximation instead of the exact erf form, in every layer."""
    broken = copy.deepcopy(module)
    for layer in broken.backbone.encoder.layers:
        layer.mlp.__class__ = _TanhGeluMlp
    return broken


class _MaskIgnored(nn.Module):
    """Runs the module with every key attended to: the padding mask reaches the graph but is not used."""

    def __init__(self, inner: MultiHeadColbert) -> None:
        super().__init__()
        self.inner = inner
        self.dims = inner.dims

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        return self.inner(input_ids, attention_mask * 0 + 1)


def mask_ignored(module: MultiHeadColbert) -> nn.Module:
    """The key padding mask ignored: real tokens of padded rows attend to the padding."""
    return _MaskIgnored(copy.deepcopy(module))


def markers_swapped(manifest: Manifest) -> Manifest:
    """The query and document markers (strings and ids) exchanged in the manifest."""
    query, document = manifest.query, manifest.document
    return dataclasses.replace(
        manifest,
        query=dataclasses.replace(query, marker=document.marker, marker_id=document.marker_id),
        document=dataclasses.replace(document, marker=query.marker, marker_id=query.marker_id),
    )


MODULE_DEFECTS: dict[str, ModuleDefect] = {
    "wrong_rotary_base": wrong_rotary_base,
    "head_transposed": head_transposed,
    "heads_truncated": heads_truncated,
    "layernorm_swapped": layernorm_swapped,
    "layer_skipped": layer_skipped,
    "mask_ignored": mask_ignored,
    "gelu_tanh": gelu_tanh,
}
# The heads each defect reaches (None: every head); with a 128/96/64 trio.
AFFECTED_HEADS: dict[str, tuple[int, ...] | None] = {"head_transposed": (128,), "heads_truncated": (96, 64)}
MANIFEST_DEFECTS = {"markers_swapped": markers_swapped}
DEFECTS = (*MODULE_DEFECTS, *MANIFEST_DEFECTS)


@contextlib.contextmanager
def injected(defect: str) -> Iterator[None]:
    """Within the block, export_model writes its graphs (or its manifest) with `defect`; the float64
    reference it judges them against stays the checkpoint's own."""
    from . import exporter

    if defect in MODULE_DEFECTS:
        name, original = "export_graph", exporter.export_graph

        def replacement(module, path, opset=exporter.OPSET):
            return original(MODULE_DEFECTS[defect](module), path, opset=opset)
    elif defect in MANIFEST_DEFECTS:
        name, original = "_manifest", exporter._manifest

        def replacement(*args, **kwargs):
            return MANIFEST_DEFECTS[defect](original(*args, **kwargs))
    else:
        raise ValueError(f"unknown defect {defect!r}; one of {', '.join(DEFECTS)}")
    setattr(exporter, name, replacement)
    try:
        yield
    finally:
        setattr(exporter, name, original)
