"""neuro-bitnet: run BitNet b1.58 ternary language models on an ordinary CPU."""

__version__ = "0.1.0"
