"""How much the int8 output head changes the model's predictions, against the exact F16 head.

Runs both heads on real-vocabulary prompts and prints, over every prompt position: top-1
agreement, mean and max KL(exact || int8), and the max logit difference relative to the logit
range. Default model: the synthetic 2B-4T (built once, cached); pass --model for a real file.

    python benchmarks/head_accuracy.py [--model FILE.gguf] [--threads 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from neuro_bitnet.config import load_settings
from neuro_bitnet.engine import load_model

PROMPTS = [
    "The capital of France is Paris, a city known for its museums, cafés and the Eiffel Tower.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "¿Cuál es la capital de España? Madrid es la capital y la ciudad más poblada del país.",
    "BitNet b1.58 stores every weight as -1, 0 or +1, so a matrix multiply needs no multiplications.",
    "Photosynthesis converts light energy into chemical energy stored in glucose molecules.",
    "User: What is the boiling point of water at sea level?\nAssistant: It boils at 100 °C (212 °F).",
]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    path = args.model
    if path is None:
        from neuro_bitnet.engine.synthetic import synthetic_model_path

        path = synthetic_model_path("2b", load_settings().models_dir / "synthetic")
    exact = load_model(path, threads=args.threads, ctx_size=512, head="exact")
    fast = load_model(path, threads=args.threads, ctx_size=512, head="q8")
    agree = total = 0
    kls, rel = [], []
    for text in PROMPTS:
        ids = exact.tokenize(text)
        a, b = exact.logits(ids), fast.logits(ids)
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += len(ids)
        pa, pb = log_softmax(a), log_softmax(b)
        kls.extend((np.exp(pa) * (pa - pb)).sum(-1).tolist())
        rel.append(float(np.abs(a - b).max() / (a.max() - a.min())))
    print(f"model: {path.name}   positions: {total}")
    print("| top-1 agreement | mean KL (nats) | max KL (nats) | max |diff| / logit range |")
    print("|---|---|---|---|")
    print(f"| {agree / total:.1%} | {np.mean(kls):.2e} | {np.max(kls):.2e} | {max(rel):.2%} |")


if __name__ == "__main__":
    main()
