"""Loads jina-colbert-v2 checkpoints (local folder or Hugging Face hub id) into plain PyTorch modules."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from tokenizers import Tokenizer

from colbert_onnx.errors import ColbertOnnxError

from .modeling import BackboneConfig, ColbertModel

CHECKPOINT_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "artifact.metadata",
)
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")
METADATA_BOOLS = ("mask_punctuation", "attend_to_mask_tokens")  # artifact.metadata keys the manifest records
METADATA_INTS = ("query_maxlen", "doc_maxlen")  # null reads as absent: query 32, doc_maxlen not recorded
MIN_QUERY_LENGTH = 4
TRAINED_POSITIONS = 8194  # jina-colbert-v2's max_position_embeddings, taken where config.json has none
HEAD_KEY = "linear.weight"
IGNORED_PREFIXES = ("pooler.",)


class CheckpointError(ColbertOnnxError):
    """The checkpoint cannot be found, or its files or tensors do not match jina-colbert-v2."""


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_source(source: str | Path, revision: str | None = None) -> tuple[Path, str]:
    """A local folder, or a hub id downloaded (or found in the HF cache) with huggingface_hub."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve(), str(path.resolve())
    text = str(source)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise CheckpointError(
            f"checkpoint {text!r} is neither an existing folder nor a hub id of the form ORG/NAME"
        )
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(repo_id=text, revision=revision, allow_patterns=list(CHECKPOINT_FILES))
    except Exception as exc:  # offline, missing from cache, gated, unknown repo...
        raise CheckpointError(
            f"could not fetch {text!r} from the Hugging Face hub or find it in the local HF cache "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Without network, "
            "download the repo elsewhere (config.json, model.safetensors, tokenizer.json, "
            "tokenizer_config.json, special_tokens_map.json, artifact.metadata) and pass its folder "
            "path instead of the hub id."
        ) from exc
    return Path(local), text


def _config_int(config: dict, key: str, default: int | None = None, source: str = "config.json") -> int:
    """A size of config.json: an int >= 1 (JSON's 64, not 64.7, "64" or true), else CheckpointError naming it."""
    if key not in config and default is not None:
        return default
    if key not in config:
        raise CheckpointError(f"{source} lacks {key!r}")
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CheckpointError(f"{source}: {key}={value!r:.40}; expected an int >= 1")
    return value


def _config_positive(config: dict, key: str, default: float) -> float:
    """A positive finite number of config.json (layer_norm_eps, rotary_emb_base), else CheckpointError naming it."""
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise CheckpointError(f"config.json: {key}={value!r:.40}; expected a positive finite number")
    return float(value)


def read_backbone_config(config: dict) -> BackboneConfig:
    """Validate config.json against what this re-implementation supports."""
    if not isinstance(config, dict):
        raise CheckpointError(f"config.json holds a JSON {type(config).__name__}, not an object")
    if config.get("position_embedding_type", "rotary") != "rotary":
        raise CheckpointError(
            f"position_embedding_type={config.get('position_embedding_type')!r}; only rotary is supported"
        )
    act = config.get("hidden_act", "gelu")
    if act != "gelu":
        raise CheckpointError(f"hidden_act={act!r}; jina-colbert-v2 uses exact 'gelu'")
    cfg = BackboneConfig(
        vocab_size=_config_int(config, "vocab_size"),
        hidden_size=_config_int(config, "hidden_size"),
        num_hidden_layers=_config_int(config, "num_hidden_layers"),
        num_attention_heads=_config_int(config, "num_attention_heads"),
        intermediate_size=_config_int(config, "intermediate_size"),
        type_vocab_size=_config_int(config, "type_vocab_size", 1),
        layer_norm_eps=_config_positive(config, "layer_norm_eps", 1e-5),
        rotary_emb_base=_config_positive(config, "rotary_emb_base", 10000.0),
    )
    if cfg.hidden_size % cfg.num_attention_heads:
        raise CheckpointError("hidden_size is not a multiple of num_attention_heads")
    head_size = cfg.hidden_size // cfg.num_attention_heads
    if head_size % 2:
        raise CheckpointError(f"config.json: hidden_size {cfg.hidden_size} / num_attention_heads "
                              f"{cfg.num_attention_heads} = {head_size}, an odd head size; rotary positions rotate "
                              "pairs of channels and need an even one")
    return cfg


def expected_shapes(cfg: BackboneConfig) -> dict[str, tuple[int, ...]]:
    """Backbone tensor names (without `roberta.`) and shapes, as in the real checkpoints."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (cfg.vocab_size, h),
        "embeddings.token_type_embeddings.weight": (cfg.type_vocab_size, h),
        "emb_ln.weight": (h,),
        "emb_ln.bias": (h,),
    }
    for n in range(cfg.num_hidden_layers):
        p = f"encoder.layers.{n}."
        shapes.update(
            {
                p + "mixer.Wqkv.weight": (3 * h, h),
                p + "mixer.Wqkv.bias": (3 * h,),
                p + "mixer.out_proj.weight": (h, h),
                p + "mixer.out_proj.bias": (h,),
                p + "norm1.weight": (h,),
                p + "norm1.bias": (h,),
                p + "mlp.fc1.weight": (i, h),
                p + "mlp.fc1.bias": (i,),
                p + "mlp.fc2.weight": (h, i),
                p + "mlp.fc2.bias": (h,),
                p + "norm2.weight": (h,),
                p + "norm2.bias": (h,),
            }
        )
    return shapes


def load_state_dict(path: Path, cfg: BackboneConfig) -> tuple[dict[str, torch.Tensor], torch.Tensor, str]:
    """Backbone tensors (fp32, names without `roberta.`), the head weight, and a backbone hash.

    The hash covers the stored bytes of every backbone tensor, so byte-identical backbones of the
    128/96/64 checkpoints are detected rather than assumed.
    """
    expected = expected_shapes(cfg)
    backbone: dict[str, torch.Tensor] = {}
    head = None
    digest = hashlib.sha256()
    try:
        handle = safe_open(str(path), framework="pt")
    except Exception as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    with handle as f:
        for key in sorted(f.keys()):
            name = key[len("roberta.") :] if key.startswith("roberta.") else key
            if name.startswith(IGNORED_PREFIXES):
                continue
            tensor = f.get_tensor(key)
            if not tensor.is_floating_point():
                raise CheckpointError(f"{path}: tensor {key!r} is {tensor.dtype}; the weights are floating point")
            if not torch.isfinite(tensor).all():
                raise CheckpointError(f"{path}: tensor {key!r} holds NaN or infinity")
            if name == HEAD_KEY:
                head = tensor
                continue
            if name not in expected:
                raise CheckpointError(f"{path} has an unexpected tensor {key!r}")
            if tuple(tensor.shape) != expected[name]:
                raise CheckpointError(
                    f"{path}: tensor {key!r} has shape {tuple(tensor.shape)}, expected {expected[name]}"
                )
            if name in backbone:
                raise CheckpointError(f"{path}: tensor {name!r} appears twice (with and without 'roberta.')")
            digest.update(name.encode())
            digest.update(str(tensor.dtype).encode())
            digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
            backbone[name] = tensor.to(torch.float32)
    missing = sorted(set(expected) - set(backbone))
    if missing:
        raise CheckpointError(f"{path} is missing {len(missing)} tensor(s), e.g. 'roberta.{missing[0]}'")
    if head is None:
        raise CheckpointError(f"{path} has no ColBERT head {HEAD_KEY!r}")
    if head.ndim != 2 or head.shape[1] != cfg.hidden_size or head.shape[0] < 1:
        raise CheckpointError(
            f"{path}: {HEAD_KEY!r} has shape {tuple(head.shape)}, expected (dim, {cfg.hidden_size})"
        )
    return backbone, head.to(torch.float32), digest.hexdigest()


@dataclass
class Checkpoint:
    """A loaded jina-colbert-v2 checkpoint: fp32 weights plus what the manifest records about it."""

    source_id: str
    path: Path
    config: dict
    backbone_config: BackboneConfig
    backbone_state: dict[str, torch.Tensor]
    head: torch.Tensor
    backbone_sha256: str
    metadata: dict = field(default_factory=dict)
    file_sha256: dict[str, str] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.head.shape[0])

    @property
    def trained_positions(self) -> int:
        """config.json's max_position_embeddings (validated at load), jina-colbert-v2's 8194 where absent."""
        return int(self.config.get("max_position_embeddings", TRAINED_POSITIONS))

    def module(self) -> ColbertModel:
        """The plain-PyTorch reference model (eval mode, fp32)."""
        model = ColbertModel(self.backbone_config, self.dim)
        # assign=True: the module uses these tensors instead of copying them (one copy in memory).
        model.roberta.load_state_dict(self.backbone_state, assign=True)
        with torch.no_grad():
            model.linear.weight.copy_(self.head)
        return model.eval()


def _check_conventions(metadata: dict, config: dict, source: Path) -> None:
    """What the runtime would refuse in the finished folder's manifest, refused here naming the checkpoint's key:
    a query length under 4 or over the trained positions, a similarity other than cosine."""
    query_maxlen = metadata.get("query_maxlen")
    if query_maxlen is not None:
        trained = config.get("max_position_embeddings")
        if query_maxlen < MIN_QUERY_LENGTH:
            raise CheckpointError(f"{source}: query_maxlen={query_maxlen}; a query needs at least "
                                  f"{MIN_QUERY_LENGTH} positions (<s>, the marker, a token, </s>)")
        if isinstance(trained, int) and query_maxlen > trained:
            raise CheckpointError(f"{source}: query_maxlen={query_maxlen} exceeds the {trained} positions the model "
                                  "was trained on (config.json max_position_embeddings)")
    similarity = metadata.get("similarity")
    if similarity is not None and similarity != "cosine":
        raise CheckpointError(
            f"{source}: similarity={similarity!r:.40}; colbert-onnx scores by cosine MaxSim (dot products of unit "
            "vectors). For unit vectors ColBERT's l2 ranks a query's documents the same, with scores 2 x cosine "
            "MaxSim - 2 x query tokens; set similarity to cosine to export with cosine scores")


def load_checkpoint(source: str | Path, revision: str | None = None, hash_files: bool = True) -> Checkpoint:
    """Load one checkpoint folder or hub id; every missing file or tensor is a CheckpointError."""
    path, source_id = resolve_source(source, revision)
    for name in REQUIRED_FILES:
        if not (path / name).is_file():
            raise CheckpointError(f"{path} lacks {name}; is it a jina-colbert-v2 checkpoint?")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path / 'config.json'} is not valid UTF-8 JSON: {exc}") from exc
    cfg = read_backbone_config(config)
    if "max_position_embeddings" in config:
        _config_int(config, "max_position_embeddings")
    backbone, head, backbone_sha = load_state_dict(path / "model.safetensors", cfg)
    metadata = {}
    if (path / "artifact.metadata").is_file():
        try:
            metadata = json.loads((path / "artifact.metadata").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path / 'artifact.metadata'} is not valid UTF-8 JSON: {exc}") from exc
        if not isinstance(metadata, dict):
            raise CheckpointError(f"{path / 'artifact.metadata'} holds a JSON {type(metadata).__name__}, not an "
                                  "object")
        for key in METADATA_BOOLS:  # "false" is a truthy string: read as given, it would flip the convention
            if key in metadata and not isinstance(metadata[key], bool):
                raise CheckpointError(f"{path / 'artifact.metadata'}: {key}={metadata[key]!r:.40}; expected true "
                                      "or false")
        for key in METADATA_INTS:
            if key in metadata and metadata[key] is not None:
                _config_int(metadata, key, source=str(path / "artifact.metadata"))  # config.json's rule
        _check_conventions(metadata, config, path / "artifact.metadata")
    try:
        Tokenizer.from_file(str(path / "tokenizer.json"))
    except Exception as exc:  # tokenizers raises a bare Exception on a damaged file
        raise CheckpointError(f"cannot read {path / 'tokenizer.json'}: {exc}") from None
    hashes = {}
    if hash_files:
        hashes = {n: sha256_file(path / n) for n in CHECKPOINT_FILES if (path / n).is_file()}
    return Checkpoint(
        source_id=source_id,
        path=path,
        config=config,
        backbone_config=cfg,
        backbone_state=backbone,
        head=head,
        backbone_sha256=backbone_sha,
        metadata=metadata,
        file_sha256=hashes,
    )
