"""Deterministic toy jina-colbert-v2 checkpoints in exactly the real folder layout, at toy size.

Real weights cannot be downloaded here (and are CC BY-NC), so tests and the demo generate the
128/96/64 trio: bf16 safetensors with the real tensor names (pooler included), a locally trained
SentencePiece-style Unigram tokenizer with XLM-R's special ids 0..3 and `<mask>` plus the two
ColBERT markers added after the vocabulary, config.json, tokenizer_config.json,
special_tokens_map.json and artifact.metadata.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers.processors import TemplateProcessing

from .checkpoint import expected_shapes
from .corpus import multilingual_texts
from .modeling import BackboneConfig

TOY_DIMS = (128, 96, 64)
TOY_CONFIG = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
}
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]
# jina-colbert-v2's query and document markers; a toy may use others (ColBERT checkpoints name theirs in
# artifact.metadata's query_token / doc_token, which the exporter reads).
MARKERS = ("[QueryMarker]", "[DocumentMarker]")
ADDED_SPECIAL = ["<mask>", *MARKERS]


def train_toy_tokenizer(vocab_size: int = 600, markers: tuple[str, str] = MARKERS) -> Tokenizer:
    """An XLM-R-like Unigram tokenizer: Metaspace pre-tokenization, `<s> $A </s>` template, `markers` added."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        unk_token="<unk>",
        show_progress=False,
        shrinking_factor=0.75,
        max_piece_length=12,
        initial_alphabet=list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    )
    texts = multilingual_texts()
    tok.train_from_iterator(texts, trainer=trainer)
    # The trainer's piece set is stable but its scores and order are not (hash-map ties, parallel
    # float sums), so scores are re-estimated by counting and the pieces sorted: same bytes every run.
    trained = json.loads(tok.to_str())["model"]["vocab"]
    specials = trained[: len(SPECIAL_TOKENS)]
    pieces = [p for p, _ in trained[len(SPECIAL_TOKENS) :]]
    # Like XLM-R, give some punctuation a word-initial piece ("▁?"), so that a stand-alone "?"
    # and the "?" of "Berlin?" get different ids and the skiplist rule is exercised for real.
    pieces += ["▁" + c for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"[::2] if "▁" + c not in pieces]
    words = " ".join("▁" + w for text in texts for w in text.split())
    total = sum(words.count(p) + 1 for p in pieces)
    scores = {p: round(math.log((words.count(p) + 1) / total), 6) for p in pieces}
    scored = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    tok.model = models.Unigram(
        [tuple(p) for p in specials] + scored, unk_id=SPECIAL_TOKENS.index("<unk>"), byte_fallback=False
    )
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True, normalized=False)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in markers])
    tok.post_processor = TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(token) == i, f"{token} must have id {i}"
    return tok


def _config(vocab_size: int, overrides: dict) -> dict:
    cfg = {
        "_name_or_path": "jinaai/jina-colbert-v2",
        "architectures": ["HF_ColBERT"],
        "attention_probs_dropout_prob": 0.1,
        "auto_map": {
            "AutoConfig": "jinaai/xlm-roberta-flash-implementation--configuration_xlm_roberta.XLMRobertaFlashConfig",
            "AutoModel": "jinaai/xlm-roberta-flash-implementation--modeling_xlm_roberta.XLMRobertaModel",
        },
        "bos_token_id": 0,
        "classifier_dropout": None,
        "emb_pooler": None,
        "eos_token_id": 2,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-05,
        "load_trained_adapters": False,
        "lora_adaptations": None,
        "lora_alpha": 1,
        "lora_dropout_p": 0.0,
        "lora_main_params_trainable": False,
        "lora_rank": 4,
        "matryoshka_dimensions": None,
        "max_position_embeddings": 8194,
        "num_loras": 1,
        "pad_token_id": 1,
        "position_embedding_type": "rotary",
        "rotary_emb_base": 10000.0,
        "torch_dtype": "bfloat16",
        "type_vocab_size": 1,
        "use_cache": False,
        "use_flash_attn": True,
        "vocab_size": vocab_size,
    }
    cfg.update(overrides)
    return cfg


def _artifact_metadata(dim: int, markers: tuple[str, str] = MARKERS) -> dict:
    return {
        "query_token_id": "[unused0]",
        "doc_token_id": "[unused1]",
        "query_token": markers[0],
        "doc_token": markers[1],
        "ncells": None,
        "centroid_score_threshold": None,
        "ndocs": None,
        "index_path": None,
        "nbits": 1,
        "kmeans_niters": 4,
        "resume": False,
        "similarity": "cosine",
        "bsize": 32,
        "accumsteps": 1,
        "lr": 3e-06,
        "maxsteps": 500000,
        "save_every": None,
        "warmup": None,
        "warmup_bert": None,
        "relu": False,
        "nway": 2,
        "use_ib_negatives": False,
        "reranker": False,
        "distillation_alpha": 1.0,
        "ignore_scores": False,
        "model_name": None,
        "query_maxlen": 32,
        "attend_to_mask_tokens": True,
        "interaction": "colbert",
        "dim": dim,
        "doc_maxlen": 300,
        "mask_punctuation": True,
        "checkpoint": "jinaai/jina-colbert-v2",
        "triples": None,
        "collection": None,
        "queries": None,
        "index_name": None,
        "overwrite": False,
        "root": None,
        "experiment": "default",
        "index_root": None,
        "name": "default",
        "rank": 0,
        "nranks": 1,
        "amp": True,
        "gpus": 0,
    }


def _tokenizer_config(vocab_size: int, markers: tuple[str, str] = MARKERS) -> dict:
    def entry(content: str, lstrip: bool = False) -> dict:
        return {
            "content": content,
            "lstrip": lstrip,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }

    decoder = {str(i): entry(t) for i, t in enumerate(SPECIAL_TOKENS)}
    base = vocab_size - len(ADDED_SPECIAL)
    decoder[str(base)] = entry("<mask>", lstrip=True)
    decoder[str(base + 1)] = entry(markers[0])
    decoder[str(base + 2)] = entry(markers[1])
    return {
        "added_tokens_decoder": decoder,
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": True,
        "cls_token": "<s>",
        "eos_token": "</s>",
        "mask_token": "<mask>",
        "model_max_length": 8194,
        "pad_token": "<pad>",
        "sep_token": "</s>",
        "tokenizer_class": "XLMRobertaTokenizer",
        "unk_token": "<unk>",
    }


def _special_tokens_map() -> dict:
    return {
        "bos_token": "<s>",
        "cls_token": "<s>",
        "eos_token": "</s>",
        "mask_token": {
            "content": "<mask>",
            "lstrip": True,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
        },
        "pad_token": "<pad>",
        "sep_token": "</s>",
        "unk_token": "<unk>",
    }


@dataclass(frozen=True)
class OutlierSpec:
    """Activation outliers planted in a random backbone: the LayerNorm gains of a few hidden channels
    multiplied by a large factor, the pattern of trained XLM-R-large ("massive activations") that breaks
    naive int8 quantization and stresses fp32 rounding.

    `layers` None plants them in every LayerNorm (the embedding one and both of every layer); otherwise
    in the listed encoder layers only, plus the embedding LayerNorm when `embedding` is True.
    """

    channels: int
    gain_range: tuple[float, float] = (10.0, 30.0)
    layers: tuple[int, ...] | None = None
    embedding: bool = True
    ffn_channels: int = 0  # intermediate FFN channels whose fc1 rows get the gains too (fc2 input outliers)

    def planted(self, name: str) -> bool:
        """Whether the LayerNorm gain tensor `name` (with `roberta.`) gets the outlier gains."""
        if name.endswith("emb_ln.weight"):
            return self.layers is None or self.embedding
        if not name.endswith(("norm1.weight", "norm2.weight")):
            return False
        return self.layers is None or int(name.split(".layers.")[1].split(".")[0]) in self.layers


def random_backbone(
    cfg: BackboneConfig,
    generator: torch.Generator,
    outliers: OutlierSpec | int | None = None,
    weight_std: float = 0.05,
) -> dict:
    """Backbone tensors (names with `roberta.`, pooler included) drawn like a BERT initialisation.

    `weight_std` 0.02 is the scale of trained XLM-R weights (the default 0.05 keeps the toys as they
    were); `outliers` (an OutlierSpec, or a channel count with x10-30 gains everywhere) plants
    activation-outlier channels.
    """
    if isinstance(outliers, int):
        outliers = OutlierSpec(outliers) if outliers else None
    state = {}
    for name, shape in expected_shapes(cfg).items():
        if name.endswith(("norm1.weight", "norm2.weight", "emb_ln.weight")):
            tensor = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        elif name.endswith("bias"):
            tensor = 0.02 * torch.randn(shape, generator=generator)
        else:
            tensor = weight_std * torch.randn(shape, generator=generator)
        state["roberta." + name] = tensor
    if outliers is not None and outliers.channels:
        channels = torch.randperm(cfg.hidden_size, generator=generator)[: outliers.channels]
        low, high = outliers.gain_range
        gains = low + (high - low) * torch.rand(outliers.channels, generator=generator)
        for name in state:
            if outliers.planted(name):
                state[name][channels] *= gains
        if outliers.ffn_channels:
            inner = torch.randperm(cfg.intermediate_size, generator=generator)[: outliers.ffn_channels]
            inner_gains = low + (high - low) * torch.rand(outliers.ffn_channels, generator=generator)
            for name in state:
                layer = name.split(".layers.")[1].split(".")[0] if ".layers." in name else None
                if name.endswith(("mlp.fc1.weight", "mlp.fc1.bias")) and (
                        outliers.layers is None or int(layer) in outliers.layers):
                    state[name][inner] *= inner_gains.reshape(-1, *([1] * (state[name].dim() - 1)))
    h = cfg.hidden_size
    state["roberta.pooler.dense.weight"] = 0.05 * torch.randn((h, h), generator=generator)
    state["roberta.pooler.dense.bias"] = torch.zeros(h)
    return state


def write_checkpoint(
    folder: Path,
    tokenizer: Tokenizer,
    config: dict,
    backbone: dict[str, torch.Tensor],
    head: torch.Tensor,
    markers: tuple[str, str] = MARKERS,
) -> Path:
    """Write one checkpoint folder in the real jinaai/jina-colbert-v2 layout (bf16 weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in backbone.items()}
    tensors["linear.weight"] = head.to(torch.bfloat16).contiguous()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer.save(str(folder / "tokenizer.json"))
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    (folder / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(vocab, markers), indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(_special_tokens_map(), indent=2) + "\n")
    (folder / "artifact.metadata").write_text(json.dumps(_artifact_metadata(int(head.shape[0]), markers), indent=4))
    return folder


def make_toy_trio(
    out_dir: str | Path,
    seed: int = 0,
    dims: tuple[int, ...] = TOY_DIMS,
    outlier_channels: OutlierSpec | int = 0,
    config_overrides: dict | None = None,
    weight_std: float = 0.05,
    markers: tuple[str, str] = MARKERS,
) -> dict[int, Path]:
    """Write `jina-colbert-v2-toy`, `-96`, `-64` folders sharing one backbone; returns dim -> folder.

    `config_overrides` with `vocab_size=250004` gives the full-size architecture with random weights;
    `outlier_channels` plants activation outliers (OutlierSpec); `weight_std` scales the weight matrices;
    `markers` are the query and document marker strings (tokenizer and artifact.metadata).
    """
    out = Path(out_dir)
    tokenizer = train_toy_tokenizer(markers=markers)
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    config = _config(vocab, {**TOY_CONFIG, **(config_overrides or {})})
    if config["vocab_size"] < vocab:  # a larger vocab_size override pads the table (full-size runs)
        raise ValueError(f"vocab_size {config['vocab_size']} is smaller than the tokenizer's {vocab}")
    cfg = BackboneConfig(
        vocab_size=config["vocab_size"],
        hidden_size=config["hidden_size"],
        num_hidden_layers=config["num_hidden_layers"],
        num_attention_heads=config["num_attention_heads"],
        intermediate_size=config["intermediate_size"],
        type_vocab_size=config.get("type_vocab_size", 1),
    )
    generator = torch.Generator().manual_seed(seed)
    backbone = random_backbone(cfg, generator, outliers=outlier_channels, weight_std=weight_std)
    folders = {}
    for dim in dims:
        # Independent heads: the 64 head is deliberately not a truncation of the 128 head.
        head = torch.randn((dim, cfg.hidden_size), generator=generator) / cfg.hidden_size**0.5
        name = "jina-colbert-v2-toy" if dim == 128 else f"jina-colbert-v2-toy-{dim}"
        folders[dim] = write_checkpoint(out / name, tokenizer, config, backbone, head, markers)
    return folders
