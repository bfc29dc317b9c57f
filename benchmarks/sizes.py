"""The model sizes `make bench` and its helpers build (random weights, the real vocabulary), by BENCH_SIZE.

wide keeps the full model's width (its GEMM shapes, heads and FFN) with 4 of its 24 layers: at full depth random
weights pass no int8 gates (docs/quantization.md), so the int8 graphs' speed at the real shapes is measured there.
"""

SIZES = {
    "full": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
             "intermediate_size": 4096, "vocab_size": 250004},
    "wide": {"hidden_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 16,
             "intermediate_size": 4096, "vocab_size": 250004},
    "small": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
              "intermediate_size": 1024, "vocab_size": 250004},
}
