"""Retrieval benchmark: indexing throughput (end to end, chunks/s and memory), chunking, embedding
and storing throughput, and query latency at size.

    python benchmarks/rag_bench.py                       # 10k and 100k chunks, MiniLM if installed
    python benchmarks/rag_bench.py --sizes 10000 --embedder DIR --json
    python benchmarks/rag_bench.py --index-files 300 --sizes ''   # only the indexing run

Storing and searching use random unit vectors (dim of the embedder) so that 100k chunks take
seconds, not the hour real embedding would; embedding speed is measured on a sample of real chunks.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from neuro_bitnet.retrieval.chunker import chunk_sections, regex_token_spans
from neuro_bitnet.retrieval.indexer import IndexOptions, index_paths
from neuro_bitnet.retrieval.loaders import Section
from neuro_bitnet.retrieval.search import hybrid_search
from neuro_bitnet.retrieval.sqlite_store import SQLiteStore
from neuro_bitnet.retrieval.store import ChunkRecord, DocumentInfo, EmbedderInfo

WORDS = ("engine model token chunk vector index search query answer source document file page line "
         "river mountain city music bread ocean moon capital language python code server memory cache "
         "perro gato ciudad río montaña música pan océano luna lenguaje código memoria respuesta fuente "
         "the a of in and is to with for on by from that this are was were be as at").split()


# A Zipf-like vocabulary, as in real text: a few very common words, a long tail of rare ones.
VOCAB = np.array(WORDS + [f"term{i}" for i in range(20000)])
WEIGHTS = 1.0 / np.arange(1, len(VOCAB) + 1)
WEIGHTS /= WEIGHTS.sum()


def make_text(rng: np.random.Generator, n_words: int) -> str:
    words = rng.choice(VOCAB, size=n_words, p=WEIGHTS)
    sentences = [" ".join(words[i : i + 12]) + "." for i in range(0, n_words, 12)]
    return "\n\n".join(" ".join(sentences[i : i + 5]) for i in range(0, len(sentences), 5))


class _QueryOnly:
    """Search-time stand-in for the embedder: returns a fixed query vector (embedding timed apart)."""

    def __init__(self, vector: np.ndarray) -> None:
        self.vector = vector

    def embed_query(self, text: str) -> np.ndarray:
        return self.vector


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def bench_indexing(rng, embedder, n_files: int) -> dict:
    """`index_paths` on a synthetic tree (mostly small notes, every 50th file ~1 MB): chunks/s end
    to end, where the time goes, and how far RSS rose (peak and after)."""
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs"
        for i in range(n_files):
            folder = docs / f"dir{i % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            words = 150_000 if i % 50 == 49 else int(rng.integers(100, 3000))
            (folder / f"note{i}.md").write_text(f"# Note {i}\n\n" + make_text(rng, words))
        before, peak_before = _rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        with SQLiteStore(Path(tmp) / "idx", create=True) as store:
            report = index_paths([docs], store, embedder, IndexOptions(recursive=True))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"files": report.indexed, "chunks": report.chunks_added, "seconds": report.seconds,
            "chunks_per_s": report.chunks_added / report.seconds, "load_seconds": report.load_seconds,
            "embed_seconds": report.embed_seconds, "store_seconds": report.store_seconds,
            "rss_before_mib": before, "rss_after_mib": _rss_mib(),
            "peak_rss_mib": max(peak, peak_before), "peak_rose": peak > peak_before}


def bench_chunking(rng, embedder, n_docs: int = 200) -> dict:
    texts = [make_text(rng, 1500) for _ in range(n_docs)]
    spans = embedder.token_spans if embedder is not None else regex_token_spans
    t0 = time.perf_counter()
    chunks = [c for t in texts for c in chunk_sections([Section(t, "", "", 1)], spans, 256, 32)]
    dt = time.perf_counter() - t0
    return {"chunks": len(chunks), "seconds": dt, "chunks_per_s": len(chunks) / dt, "sample": chunks[:256]}


def bench_embedding(embedder, chunks) -> dict:
    texts = [c.text for c in chunks]
    embedder.embed_documents(texts[:8])  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    embedder.embed_documents(texts)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    # CPU seconds (all threads) are steadier than wall time on a machine shared with other work.
    return {"chunks": len(texts), "seconds": dt, "chunks_per_s": len(texts) / dt, "cpu_seconds": cpu,
            "chunks_per_cpu_s": len(texts) / cpu}


def bench_store_and_search(rng, n_chunks: int, dim: int, queries: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "idx", create=True)
        store.set_embedder(EmbedderInfo("bench", "bench", dim))
        per_doc = 20
        texts = [make_text(rng, 180) for _ in range(500)]  # reused text pool: storing, not generating
        t0 = time.perf_counter()
        for d in range(n_chunks // per_doc):
            vecs = rng.standard_normal((per_doc, dim), dtype=np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            records = [ChunkRecord(i, texts[(d * per_doc + i) % len(texts)], "", f"lines {i}") for i in range(per_doc)]
            store.replace_document(DocumentInfo(f"/bench/doc{d}.md", "h", 1, 1, per_doc), records, vecs)
        store_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        store._load_vectors()
        load_s = time.perf_counter() - t0
        qvecs = rng.standard_normal((queries, dim), dtype=np.float32)
        qvecs /= np.linalg.norm(qvecs, axis=1, keepdims=True)
        qtexts = [" ".join(rng.choice(VOCAB, size=6, p=WEIGHTS)) for _ in range(queries)]
        timings: dict[str, list[float]] = {"vector": [], "lexical": [], "hybrid": []}
        for q, text in zip(qvecs, qtexts):
            t = time.perf_counter()
            store.vector_search(q, 50)
            timings["vector"].append(time.perf_counter() - t)
            t = time.perf_counter()
            store.lexical_search(text, 50)
            timings["lexical"].append(time.perf_counter() - t)
            t = time.perf_counter()
            hybrid_search(store, _QueryOnly(q), text, top_k=5)
            timings["hybrid"].append(time.perf_counter() - t)
        size = store.stats()["size_bytes"]
        store.close()
    result = {"chunks": n_chunks, "store_seconds": store_s, "store_chunks_per_s": n_chunks / store_s,
              "vector_load_seconds": load_s, "db_bytes": size}
    for mode, values in timings.items():
        ms = sorted(v * 1000 for v in values)
        result[f"{mode}_p50_ms"] = statistics.median(ms)
        result[f"{mode}_p95_ms"] = ms[int(0.95 * (len(ms) - 1))]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated chunk counts")
    parser.add_argument("--embedder", default="all-minilm-l6-v2", help="name or ONNX dir; 'none' to skip")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--index-files", type=int, default=0,
                        help="also index a synthetic tree of this many files with the embedder (slow)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    embedder = None
    if args.embedder != "none":
        from neuro_bitnet.retrieval.embedders import load_embedder

        try:
            embedder = load_embedder(args.embedder)
        except Exception as exc:  # benchmark goes on without embedding numbers
            print(f"embedder unavailable ({exc}); skipping embedding", file=sys.stderr)
    report: dict = {"embedder": getattr(embedder, "name", None)}
    if embedder is not None and args.index_files:
        report["indexing"] = bench_indexing(rng, embedder, args.index_files)  # first: the peak RSS is its own
    chunking = bench_chunking(rng, embedder)
    sample = chunking.pop("sample")
    report["chunking"] = chunking
    if embedder is not None:
        report["embedding"] = bench_embedding(embedder, sample)
    dim = embedder.dim if embedder is not None else 384
    report["scale"] = [bench_store_and_search(rng, int(n), dim, args.queries) for n in args.sizes.split(",") if n]
    if args.json:
        print(json.dumps(report, indent=2))
        return
    if "indexing" in report:
        x = report["indexing"]
        print(f"indexing:  {x['chunks_per_s']:9.1f} chunks/s end to end ({x['files']} files, {x['chunks']} chunks, "
              f"{x['seconds']:.0f} s: read+chunk {x['load_seconds']:.0f}, embed {x['embed_seconds']:.0f}, store "
              f"{x['store_seconds']:.0f}); RSS {x['rss_before_mib']:.0f} -> peak {x['peak_rss_mib']:.0f}, "
              f"after {x['rss_after_mib']:.0f} MiB")
    print(f"chunking:  {chunking['chunks_per_s']:9.0f} chunks/s ({chunking['chunks']} chunks)")
    if "embedding" in report:
        e = report["embedding"]
        print(f"embedding: {e['chunks_per_s']:9.1f} chunks/s, {e['chunks_per_cpu_s']:.1f} per CPU-second "
              f"({report['embedder']}, {e['chunks']} chunks)")
    for s in report["scale"]:
        print(f"{s['chunks']:>7} chunks: store {s['store_chunks_per_s']:8.0f} chunks/s, vectors load "
              f"{s['vector_load_seconds'] * 1000:.0f} ms, db {s['db_bytes'] / 1e6:.0f} MB; p50/p95 ms: "
              f"vector {s['vector_p50_ms']:.1f}/{s['vector_p95_ms']:.1f}, lexical {s['lexical_p50_ms']:.1f}/"
              f"{s['lexical_p95_ms']:.1f}, hybrid {s['hybrid_p50_ms']:.1f}/{s['hybrid_p95_ms']:.1f}")


if __name__ == "__main__":
    main()
