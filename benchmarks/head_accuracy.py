"""How much the quantized output heads change the model's predictions, against the exact F16 head.

Runs each head on real-vocabulary prompts and prints, over every prompt position: top-1
agreement, how often the 40 best tokens (the default top-k) are the same set, mean and max
KL(exact || quantized), and the max logit difference relative to the logit range. The quantized
heads recompute their 128 best candidates exactly (engine README), so the differences sit in the
tail. Default model: the synthetic 2B-4T (built once, cached); pass --model for a real file.

    python benchmarks/head_accuracy.py [--model FILE.gguf] [--threads 2] [--heads q4,q8]
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
    parser.add_argument("--heads", default="q4,q8", help="comma-separated heads to compare")
    args = parser.parse_args()
    path = args.model
    if path is None:
        from neuro_bitnet.engine.synthetic import synthetic_model_path

        path = synthetic_model_path("2b", load_settings().models_dir / "synthetic")
    exact = load_model(path, threads=args.threads, ctx_size=512, head="exact")
    references = [(ids, exact.logits(ids)) for ids in (exact.tokenize(text) for text in PROMPTS)]
    del exact
    print(f"model: {path.name}   positions: {sum(len(ids) for ids, _ in references)}")
    print("| head | top-1 agreement | same top-40 | mean KL (nats) | max KL (nats) | max |diff| / logit range |")
    print("|---|---|---|---|---|---|")
    for head in args.heads.split(","):
        fast = load_model(path, threads=args.threads, ctx_size=512, head=head)
        agree = same40 = total = 0
        kls, rel = [], []
        for ids, a in references:
            b = fast.logits(ids, exact=False)  # the generation head, not the exact scoring path
            agree += int((a.argmax(-1) == b.argmax(-1)).sum())
            top_a, top_b = np.sort(np.argsort(-a, -1)[:, :40], -1), np.sort(np.argsort(-b, -1)[:, :40], -1)
            same40 += int((top_a == top_b).all(-1).sum())
            total += len(ids)
            pa, pb = log_softmax(a), log_softmax(b)
            kls.extend((np.exp(pa) * (pa - pb)).sum(-1).tolist())
            rel.append(float(np.abs(a - b).max() / (a.max() - a.min())))
        print(f"| {head} | {agree / total:.1%} | {same40 / total:.1%} | {np.mean(kls):.2e} | "
              f"{np.max(kls):.2e} | {max(rel):.2%} |")
        del fast

if __name__ == "__main__":
    main()
