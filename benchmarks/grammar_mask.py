"""Time per token of the constrained sampler's mask on the real Llama-3 vocabulary (128,256 tokens).

No model runs: each step draws random logits, masks them with the grammar (llguidance computes
the bitmask, numpy turns it into -inf), takes the best allowed token and advances the grammar,
so the numbers are the mask's cost alone, the part constrained decoding adds to every token.

    python benchmarks/grammar_mask.py [--steps 200] [--seeds 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from neuro_bitnet.engine.constrained import Grammar, GrammarConstraint
from neuro_bitnet.engine.tokenizer import Tokenizer, gguf_metadata_from_hf_tokenizer, llama3_tokenizer_json

SCHEMAS = {
    "any JSON object": {"type": "object"},
    "person (bounded)": {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 40}, "age": {"type": "integer", "minimum": 0},
                       "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5}},
        "required": ["name", "age", "tags"], "additionalProperties": False,
    },
    "string pattern": {"type": "string", "pattern": "^[a-z]{3,20}@[a-z]{3,10}\\.com$"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    tok = Tokenizer.from_gguf_metadata(gguf_metadata_from_hf_tokenizer(llama3_tokenizer_json()))
    n_vocab = tok.vocab_size
    start = time.perf_counter()
    GrammarConstraint(Grammar.json_object(), tok, n_vocab)
    print(f"vocabulary {n_vocab}: llguidance tokenizer built in {time.perf_counter() - start:.2f}s (once per model)")
    for name, schema in SCHEMAS.items():
        grammar = Grammar.json_schema(schema)
        per_token: list[float] = []
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            constraint = GrammarConstraint(grammar, tok, n_vocab)
            for _ in range(args.steps):
                logits = rng.standard_normal(n_vocab).astype(np.float32)
                before = constraint.mask_seconds
                token = int(np.argmax(constraint.mask(logits)))
                per_token.append(constraint.mask_seconds - before)
                if token in tok.stop_ids:
                    break
                constraint.accept(token)
                if constraint.finished:
                    break
        ms = np.array(per_token) * 1000
        print(f"{name:18s} {ms.size:5d} tokens: median {np.median(ms):.3f} ms, p90 {np.percentile(ms, 90):.3f} ms, "
              f"max {ms.max():.2f} ms per token")


if __name__ == "__main__":
    main()
