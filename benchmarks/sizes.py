"""The model sizes `make bench` and its helpers build (random weights, the real vocabulary), by BENCH_SIZE."""

SIZES = {
    "full": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
             "intermediate_size": 4096, "vocab_size": 250004},
    "small": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
              "intermediate_size": 1024, "vocab_size": 250004},
}
