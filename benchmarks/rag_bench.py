"""Retrieval benchmark: indexing throughput (end to end, chunks/s and memory), chunking, embedding
and storing throughput, and query latency at size.

    python benchmarks/rag_bench.py                       # 10k and 100k chunks, MiniLM if installed
    python benchmarks/rag_bench.py --sizes 10000 --embedder DIR --json
    python benchmarks/rag_bench.py --index-files 300 --sizes ''   # only the indexing run
    python benchmarks/rag_bench.py --stores sqlite,postgres         # both stores (pgserver, or --postgres URL)

Storing and searching use synthetic Zipf-like text and synthetic embeddings (dim of the embedder),
so that 100k chunks take minutes, not the hours real embedding would; embedding speed is measured
on a sample of real chunks. A chunk's vector is the idf-weighted sum of fixed random word vectors
of its words (a bag-of-words embedding: chunks that share words are near, as with a real
embedder), and a query is six words of a stored chunk, embedded the same way; `--random-vectors`
uses uniform random unit vectors instead (no neighbourhood structure: HNSW's worst case).
The PostgreSQL store runs on a pgserver instance started in a temp dir
(PostgreSQL 16 + pgvector, the tests' server) unless `--postgres URL` names a database to use
(its neuro tables are dropped and rebuilt for each size).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from neuro_bitnet.retrieval.chunker import chunk_sections, regex_token_spans
from neuro_bitnet.retrieval.indexer import IndexOptions, index_paths
from neuro_bitnet.retrieval.loaders import Section
from neuro_bitnet.retrieval.search import hybrid_search
from neuro_bitnet.retrieval.sqlite_store import SQLiteStore
from neuro_bitnet.retrieval.store import ChunkRecord, DocumentInfo, EmbedderInfo, Store, open_store

WORDS = ("engine model token chunk vector index search query answer source document file page line "
         "river mountain city music bread ocean moon capital language python code server memory cache "
         "perro gato ciudad río montaña música pan océano luna lenguaje código memoria respuesta fuente "
         "the a of in and is to with for on by from that this are was were be as at").split()


# A Zipf-like vocabulary, as in real text: a few very common words, a long tail of rare ones.
VOCAB = np.array(WORDS + [f"term{i}" for i in range(20000)])
WEIGHTS = 1.0 / np.arange(1, len(VOCAB) + 1)
WEIGHTS /= WEIGHTS.sum()


IDF = -np.log(WEIGHTS)


class _Embeddings:
    """The synthetic embeddings of the scale runs (see the module docstring)."""

    def __init__(self, rng: np.random.Generator, dim: int, random_vectors: bool) -> None:
        self.rng, self.dim, self.random = rng, dim, random_vectors
        self.words = rng.standard_normal((len(VOCAB), dim), dtype=np.float32)

    def embed(self, word_ids: np.ndarray) -> np.ndarray:
        """Unit vectors for rows of word ids, shape (n, words) -> (n, dim)."""
        if self.random:
            vecs = self.rng.standard_normal((len(word_ids), self.dim), dtype=np.float32)
        else:
            vecs = np.einsum("nw,nwd->nd", IDF[word_ids].astype(np.float32), self.words[word_ids])
        return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def make_text(rng: np.random.Generator, n_words: int) -> str:
    words = rng.choice(VOCAB, size=n_words, p=WEIGHTS)
    sentences = [" ".join(words[i : i + 12]) + "." for i in range(0, n_words, 12)]
    return "\n\n".join(" ".join(sentences[i : i + 5]) for i in range(0, len(sentences), 5))


class _QueryOnly:
    """Search-time stand-in for the embedder: returns a fixed query vector (embedding timed apart)."""

    name = fingerprint = "bench"  # as recorded by bench_store_and_search

    def __init__(self, vector: np.ndarray) -> None:
        self.vector = vector
        self.dim = len(vector)

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


SHARED_BUFFERS = "1GB"  # the pgserver instance's cache: room for the 100k-chunk table and its indexes


class _Postgres:
    """Fresh PostgreSQL databases for the scale runs: on `url`, or on a pgserver started here
    (shared_buffers SHARED_BUFFERS)."""

    def __init__(self, url: str | None) -> None:
        self.url, self.server, self.base = url, None, None
        self.count = 0

    @contextmanager
    def database(self) -> Iterator[str]:
        import psycopg

        if self.url is not None:  # the user's database: start from no neuro tables
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute("DROP TABLE IF EXISTS neuro_chunks, neuro_documents, neuro_meta")
            yield self.url
            return
        if self.server is None:
            import pgserver

            self.base = Path(tempfile.mkdtemp(prefix="neuro-bench-pg-"))
            self.base.chmod(0o755)  # as root, pgserver runs PostgreSQL as another user
            first = pgserver.get_server(self.base / "pgdata", cleanup_mode="stop")
            with psycopg.connect(first.get_uri(), autocommit=True) as conn:  # the default is 128MB
                conn.execute(f"ALTER SYSTEM SET shared_buffers = '{SHARED_BUFFERS}'")
            first.cleanup()  # stopped, and started again with the setting
            self.server = pgserver.get_server(self.base / "pgdata", cleanup_mode="stop")
        self.count += 1
        name = f"bench{self.count}"
        admin = self.server.get_uri()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        try:
            yield admin.replace("/postgres?", f"/{name}?", 1)
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE {name}")

    def close(self) -> None:
        if self.server is not None:
            self.server.cleanup()
            shutil.rmtree(self.base, ignore_errors=True)


@contextmanager
def _bench_store(kind: str, postgres: _Postgres) -> Iterator[Store]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp, open_store(Path(tmp) / "idx", create=True) as store:
            yield store
        return
    with postgres.database() as url, open_store(url, create=True) as store:
        yield store


def bench_store_and_search(rng, kind: str, postgres: _Postgres, n_chunks: int, dim: int, queries: int,
                           random_vectors: bool = False) -> dict:
    """Store `n_chunks` (20 a document, one transaction each; then `optimize()`, as `neuro index`
    ends), then time vector, lexical and hybrid queries; recall@10 of the vector search against
    exact cosine (HNSW on PostgreSQL)."""
    embeddings = _Embeddings(rng, dim, random_vectors)
    per_doc, words = 20, 180
    with _bench_store(kind, postgres) as store:
        store.set_embedder(EmbedderInfo("bench", "bench", dim))
        n_docs = n_chunks // per_doc
        matrix = np.empty((n_docs * per_doc, dim), dtype=np.float32)
        samples = []
        store_s = 0.0
        for d in range(n_docs):
            ids = rng.choice(len(VOCAB), size=(per_doc, words), p=WEIGHTS)
            vecs = embeddings.embed(ids)
            matrix[d * per_doc : (d + 1) * per_doc] = vecs
            records = [ChunkRecord(i, " ".join(VOCAB[row]), "", f"lines {i}") for i, row in enumerate(ids)]
            if len(samples) < queries and d % max(1, n_docs // queries) == 0:
                samples.append(rng.choice(ids[0], size=6, replace=False))
            t0 = time.perf_counter()
            store.replace_document(DocumentInfo(f"/bench/doc{d}.md", "h", 1, 1, per_doc), records, vecs)
            store_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        store.optimize()  # as `neuro index` does at the end of a run (PostgreSQL: builds the HNSW index)
        optimize_s = time.perf_counter() - t0
        qids = np.array(samples)
        qvecs = embeddings.embed(qids)
        qtexts = [" ".join(VOCAB[row]) for row in qids]
        t0 = time.perf_counter()
        store.vector_search(qvecs[0], 50)  # SQLite: loads the vector matrix
        first_s = time.perf_counter() - t0
        timings: dict[str, list[float]] = {"vector": [], "lexical": [], "hybrid": []}
        found = 0
        for q, text in zip(qvecs, qtexts):
            t = time.perf_counter()
            hits = store.vector_search(q, 50)
            timings["vector"].append(time.perf_counter() - t)
            t = time.perf_counter()
            store.lexical_search(text, 50)
            timings["lexical"].append(time.perf_counter() - t)
            t = time.perf_counter()
            hybrid_search(store, _QueryOnly(q), text, top_k=5)
            timings["hybrid"].append(time.perf_counter() - t)
            exact = set(np.argsort(-(matrix @ q))[:10].tolist())
            chunks = store.get_chunks([cid for cid, _ in hits[:10]]).values()
            found += len(exact & {int(c.path[len("/bench/doc"):-3]) * per_doc + c.ordinal for c in chunks})
        size = store.stats()["size_bytes"]
    result = {"store": kind, "chunks": n_chunks, "store_seconds": store_s, "store_chunks_per_s": n_chunks / store_s,
              "optimize_seconds": optimize_s, "index_chunks_per_s": n_chunks / (store_s + optimize_s),
              "first_query_ms": first_s * 1000, "db_bytes": size, "recall_at_10": found / (10 * len(qvecs)),
              "vectors": "random" if random_vectors else "bag-of-words"}
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
    parser.add_argument("--random-vectors", action="store_true",
                        help="uniform random vectors instead of the bag-of-words embeddings")
    parser.add_argument("--stores", default="sqlite", help="comma-separated: sqlite, postgres")
    parser.add_argument("--postgres", default=None, metavar="URL",
                        help="database for the postgres runs (default: a pgserver started in a temp dir)")
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
    postgres = _Postgres(args.postgres)
    try:
        report["scale"] = [bench_store_and_search(rng, kind, postgres, int(n), dim, args.queries, args.random_vectors)
                           for n in args.sizes.split(",") if n for kind in args.stores.split(",") if kind]
    finally:
        postgres.close()
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
        print(f"{s['store']:>8} {s['chunks']:>7} chunks: store {s['index_chunks_per_s']:6.0f} chunks/s (optimize "
              f"{s['optimize_seconds']:.0f} s), first query "
              f"{s['first_query_ms']:.0f} ms, db {s['db_bytes'] / 1e6:.0f} MB, recall@10 {s['recall_at_10']:.3f}; "
              "p50/p95 ms: "
              f"vector {s['vector_p50_ms']:.1f}/{s['vector_p95_ms']:.1f}, lexical {s['lexical_p50_ms']:.1f}/"
              f"{s['lexical_p95_ms']:.1f}, hybrid {s['hybrid_p50_ms']:.1f}/{s['hybrid_p95_ms']:.1f}")


if __name__ == "__main__":
    main()
