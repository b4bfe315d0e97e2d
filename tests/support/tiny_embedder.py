"""Build tiny ONNX embedders for tests: a word-level tokenizer plus an embedding-table lookup.

Words of one "concept" (e.g. dog/perro) share a vector, so a Spanish query finds an English
passage through the vector path exactly as a multilingual model would, while lexical search
cannot. The ONNX graph returns `last_hidden_state` [batch, seq, dim]; pooling and normalisation
are done by the code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CONCEPTS: list[tuple[str, ...]] = [
    ("dog", "dogs", "perro", "perros", "puppy"),
    ("cat", "cats", "gato", "gatos", "kitten"),
    ("capital", "capitals"),
    ("france", "francia", "french", "francés"),
    ("paris",),
    ("engine", "motor", "engines"),
    ("cpu", "processor", "procesador", "cpus"),
    ("gpu", "graphics", "gráfica", "gpus", "card"),
    ("install", "instalar", "installation", "instalación", "installing"),
    ("river", "río", "rivers", "ríos"),
    ("music", "música", "song", "canción"),
    ("bread", "pan", "bakery", "panadería"),
    ("moon", "luna"),
    ("ocean", "océano", "sea", "mar"),
    ("python", "programming", "programación", "code"),
    ("bark", "ladra", "barks", "ladran"),
    ("meow", "maúlla", "maullar"),
]
FILLER = ("the a of is are and in on to with what which how does do el la los las de es son y en "
          "que cómo qué runs needs no quickly loud night water flows deep tower eiffel").split()
DIM = 16


def _normalizer():
    from tokenizers import normalizers

    return normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()])


def _strip(word: str) -> str:
    return _normalizer().normalize_str(word)


def build_tiny_embedder(directory: Path, seed: int = 0, extra_files: dict | None = None) -> Path:
    """Write model.onnx, tokenizer.json and config.json into `directory`; return it."""
    import onnx
    from onnx import TensorProto, helper
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel

    rng = np.random.default_rng(seed)
    vocab: dict[str, int] = {"[PAD]": 0, "[UNK]": 1}
    rows = [np.zeros(DIM), np.zeros(DIM)]
    for group in CONCEPTS:
        vec = rng.normal(size=DIM)
        vec /= np.linalg.norm(vec)
        for word in group:
            key = _strip(word)
            if key not in vocab:
                vocab[key] = len(rows)
                rows.append(vec)
    for word in FILLER:
        key = _strip(word)
        if key not in vocab:
            vocab[key] = len(rows)
            rows.append(rng.normal(size=DIM) * 0.05)  # function words: near-zero vectors
    table = np.array(rows, dtype=np.float32)

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = _normalizer()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(directory / "tokenizer.json"))

    weights = helper.make_tensor("table", TensorProto.FLOAT, table.shape, table.flatten().tolist())
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["last_hidden_state"], axis=0)],
        "tiny_embedder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", DIM])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(directory / "model.onnx"))
    (directory / "config.json").write_text(json.dumps({"max_position_embeddings": 128, "hidden_size": DIM}))
    for name, content in (extra_files or {}).items():
        (directory / name).write_text(json.dumps(content) if not isinstance(content, str) else content)
    return directory
