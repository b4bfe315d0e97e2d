"""Write large synthetic 1bitLLM-style checkpoints (random float32 weights) a tensor at a time,
for memory tests; also runnable to measure a full-size conversion:

    python tests/support/synthetic_checkpoint.py DIR --preset 3b     # 13 GB, 3 shards
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
from pathlib import Path

import numpy as np

HF = Path(__file__).resolve().parent.parent / "fixtures" / "hf"
PRESETS = {  # n_embd, n_ff, n_layer, n_head, n_vocab, shards
    "3b": (3200, 8640, 26, 32, 32002, 3),
    "large": (1536, 4096, 24, 16, 32002, 1),
}


def tensor_shapes(n_embd: int, n_ff: int, n_layer: int, n_vocab: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (n_vocab, n_embd), "model.norm.weight": (n_embd,)
    }
    for i in range(n_layer):
        p = f"model.layers.{i}"
        shapes.update({
            f"{p}.input_layernorm.weight": (n_embd,), f"{p}.post_attention_layernorm.weight": (n_embd,),
            f"{p}.self_attn.inner_attn_ln.weight": (n_embd,), f"{p}.mlp.ffn_layernorm.weight": (n_ff,),
            f"{p}.self_attn.q_proj.weight": (n_embd, n_embd), f"{p}.self_attn.k_proj.weight": (n_embd, n_embd),
            f"{p}.self_attn.v_proj.weight": (n_embd, n_embd), f"{p}.self_attn.o_proj.weight": (n_embd, n_embd),
            f"{p}.mlp.gate_proj.weight": (n_ff, n_embd), f"{p}.mlp.up_proj.weight": (n_ff, n_embd),
            f"{p}.mlp.down_proj.weight": (n_embd, n_ff),
        })
    return shapes


def _write_shard(path: Path, shapes: dict[str, tuple[int, ...]], rng: np.random.Generator) -> None:
    header, offset = {}, 0
    for name, shape in shapes.items():
        nbytes = int(np.prod(shape)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, shape in shapes.items():
            n = int(np.prod(shape))
            for start in range(0, n, 1 << 24):
                k = min(1 << 24, n - start)
                if name.endswith("norm.weight") or "layernorm" in name or "_ln." in name:
                    f.write(np.ones(k, dtype=np.float32).tobytes())
                else:
                    f.write((rng.standard_normal(k, dtype=np.float32) * np.float32(0.02)).tobytes())


def write_checkpoint(dest: Path, n_embd: int, n_ff: int, n_layer: int, n_head: int, n_vocab: int,
                     shards: int = 1, seed: int = 0) -> int:
    """A 1bitLLM checkpoint folder (tokenizer from the tiny fixture); returns its weight bytes."""
    dest.mkdir(parents=True, exist_ok=True)
    shapes = tensor_shapes(n_embd, n_ff, n_layer, n_vocab)
    names = list(shapes)
    per = -(-len(names) // shards)
    rng = np.random.default_rng(seed)
    weight_map = {}
    for s in range(shards):
        part = names[s * per : (s + 1) * per]
        fname = "model.safetensors" if shards == 1 else f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        _write_shard(dest / fname, {n: shapes[n] for n in part}, rng)
        weight_map.update({n: fname for n in part})
    if shards > 1:
        (dest / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    config = json.loads((HF / "1bitllm" / "config.json").read_text())
    config.update(hidden_size=n_embd, intermediate_size=n_ff, num_hidden_layers=n_layer, num_attention_heads=n_head,
                  num_key_value_heads=n_head, vocab_size=n_vocab, tie_word_embeddings=True)
    (dest / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(HF / "1bitllm" / name, dest / name)
    return sum(int(np.prod(s)) * 4 for s in shapes.values())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="3b")
    args = parser.parse_args()
    total = write_checkpoint(args.dest, *PRESETS[args.preset])
    print(f"wrote {total / 1e9:.2f} GB to {args.dest}")
