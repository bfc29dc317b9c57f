"""The small multilingual text set shipped with the package (tokenizer training, parity, calibration)."""

from __future__ import annotations

from importlib import resources


def multilingual_texts() -> list[str]:
    """Sentences in about 25 languages and scripts, with digits, code and punctuation."""
    text = resources.files(__package__).joinpath("data/multilingual.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]
