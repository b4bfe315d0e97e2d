"""How much an f16 KV cache changes the model's predictions, against the f32 cache.

Two measurements, both with the exact head (so only the cache differs):

- the test fixtures (tests/fixtures/*/model.gguf): every position of their reference prompts
  (`logits(exact=False)`: an exact scoring call keeps f32 whatever the cache), f16 against f32,
  and whether greedy decoding still gives the reference's tokens;
- a long context on the synthetic 2B-4T (or --model): a prompt of --prompt random tokens, then
  --steps teacher-forced tokens (the f32 model's greedy choices), comparing the logits of each
  step, at positions prompt .. prompt + steps.

Prints top-1 agreement, mean and max KL(f32 || f16) and the max logit difference relative to the
logit range.

    python benchmarks/kv_cache_accuracy.py [--model FILE.gguf] [--prompt 1024] [--steps 64]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from neuro_bitnet.config import load_settings
from neuro_bitnet.engine import load_model

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def compare(ref: np.ndarray, got: np.ndarray) -> dict:
    """Top-1 agreement, KL(ref || got) mean and max, max |difference| / logit range, over rows."""
    lr, lg = log_softmax(ref), log_softmax(got)
    kl = (np.exp(lr) * (lr - lg)).sum(-1)
    spread = np.ptp(ref, axis=-1)
    return {
        "positions": int(ref.shape[0]),
        "top1": float((ref.argmax(-1) == got.argmax(-1)).mean()),
        "kl_mean": float(kl.mean()),
        "kl_max": float(kl.max()),
        "max_rel_diff": float((np.abs(ref - got).max(-1) / spread).max()),
    }


def show(name: str, r: dict) -> None:
    print(f"{name:28s} positions {r['positions']:5d}  top-1 {100 * r['top1']:6.2f}%  "
          f"KL mean {r['kl_mean']:.2e} max {r['kl_max']:.2e}  max |diff| {100 * r['max_rel_diff']:.3f}% of range")


def fixtures(threads: int) -> None:
    for path in sorted(FIXTURES.glob("*/model.gguf")):
        ref = np.load(path.parent / "reference.npz")
        models = {kv: load_model(path, threads=threads, ctx_size=128, head="exact", kv_cache=kv)
                  for kv in ("f32", "f16")}
        a, b, greedy_equal = [], [], True
        for i, n in enumerate(ref["lengths"]):
            ids = ref["tokens"][i, :n].tolist()
            a.append(models["f32"].logits(ids, exact=False))  # exact=True would keep f32 for both
            b.append(models["f16"].logits(ids, exact=False))
            want = []
            for token in ref["greedy"][i].tolist():  # the reference ran past end-of-turn tokens
                if token in models["f16"].tokenizer.stop_ids:
                    break
                want.append(token)
            answer = models["f16"].generate(ids, max_tokens=len(ref["greedy"][i]), temperature=0, repeat_penalty=1.0)
            "".join(answer)
            greedy_equal &= answer.result.tokens == want
        r = compare(np.concatenate(a), np.concatenate(b))
        show(f"fixture {path.parent.name}", r)
        print(f"{'':28s} f16 greedy tokens equal to the reference: {greedy_equal}")
        for m in models.values():
            m.close()


def long_context(path: Path, threads: int | None, prompt: int, steps: int) -> None:
    models = {kv: load_model(path, threads=threads, ctx_size=prompt + steps + 8, head="exact", kv_cache=kv)
              for kv in ("f32", "f16")}
    rng = np.random.default_rng(0)
    ids = rng.integers(0, min(models["f32"].n_vocab, 100_000), size=prompt).astype(np.int32)
    logits = {kv: np.empty((1, m.n_vocab), np.float32) for kv, m in models.items()}
    rows = {kv: [] for kv in models}
    for kv, m in models.items():
        m._forward(ids, 0, logits[kv], False)
    for step in range(steps):
        token = int(np.argmax(logits["f32"]))  # both read the f32 model's choice
        for kv, m in models.items():
            rows[kv].append(logits[kv][0].copy())
            m._forward([token], prompt + step, logits[kv], False)
    show(f"{path.stem[:20]} @{prompt}..{prompt + steps}", compare(np.array(rows["f32"]), np.array(rows["f16"])))
    for m in models.values():
        m.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="default: the synthetic 2B-4T")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--prompt", type=int, default=1024, help="tokens before the compared steps")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--no-fixtures", action="store_true")
    args = parser.parse_args()
    if not args.no_fixtures:
        fixtures(args.threads or 2)
    path = args.model
    if path is None:
        from neuro_bitnet.engine.synthetic import synthetic_model_path

        path = synthetic_model_path("2b", load_settings().models_dir / "synthetic")
    long_context(path, args.threads, args.prompt, args.steps)


if __name__ == "__main__":
    main()
