"""SQLite store: replace/delete, exact vector search, FTS5, embedder guard, bad databases."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from neuro_bitnet.retrieval.errors import EmbedderMismatchError, StorageError
from neuro_bitnet.retrieval.sqlite_store import SCHEMA_VERSION, SQLiteStore, database_path
from neuro_bitnet.retrieval.store import ChunkRecord, DocumentInfo, EmbedderInfo

DIM = 8


def unit(rng, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def add(store: SQLiteStore, path: str, texts: list[str], vectors: np.ndarray) -> None:
    doc = DocumentInfo(path, "h-" + path, 10, 1, len(texts))
    store.replace_document(doc, [ChunkRecord(i, t, "Head", f"line {i}") for i, t in enumerate(texts)], vectors)


@pytest.fixture
def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "idx", create=True)
    s.set_embedder(EmbedderInfo("tiny", "fp1", DIM))
    yield s
    s.close()


def test_vector_search_is_exact(store: SQLiteStore) -> None:
    rng = np.random.default_rng(1)
    vecs = unit(rng, 300)
    for d in range(30):
        add(store, f"/d/{d}.txt", [f"text {d} {i}" for i in range(10)], vecs[d * 10 : d * 10 + 10])
    query = unit(rng, 1)[0]
    hits = store.vector_search(query, 7)
    chunks = store.get_chunks([cid for cid, _ in hits])
    expected = np.argsort(-(vecs @ query))[:7]
    got = [int(chunks[cid].path.split("/")[-1][:-4]) * 10 + chunks[cid].ordinal for cid, _ in hits]
    assert got == expected.tolist()
    assert [round(s, 5) for _, s in hits] == [round(float(x), 5) for x in np.sort(vecs @ query)[::-1][:7]]


def test_replace_and_delete_keep_fts_in_step(store: SQLiteStore) -> None:
    rng = np.random.default_rng(2)
    add(store, "/a.md", ["the quick brown fox", "lazy dogs sleep"], unit(rng, 2))
    add(store, "/b.md", ["café au lait"], unit(rng, 1))
    assert {store.get_chunks([c])[c].path for c, _ in store.lexical_search("fox", 5)} == {"/a.md"}
    assert store.lexical_search("cafe", 5)  # diacritics folded
    add(store, "/a.md", ["a wholly new text"], unit(rng, 1))
    assert store.lexical_search("fox", 5) == []
    assert store.documents()["/a.md"].chunks == 1
    store.delete_documents(["/a.md"])
    assert store.lexical_search("wholly", 5) == [] and set(store.documents()) == {"/b.md"}
    assert len(store.vector_search(unit(rng, 1)[0], 10)) == 1
    assert store.check() == []


def test_lexical_query_syntax_is_never_an_error(store: SQLiteStore) -> None:
    add(store, "/a.md", ['He said "hello" AND NOT (bye) * near'], unit(np.random.default_rng(3), 1))
    for query in ['"hello', "AND OR NOT", "(bye", "*", "near(", "", "¿¡"]:
        store.lexical_search(query, 5)
    assert store.lexical_search('"hello" NOT', 5)


def test_embedder_mismatch_is_refused(store: SQLiteStore) -> None:
    store.set_embedder(EmbedderInfo("tiny-renamed", "fp1", DIM))  # same weights: fine
    with pytest.raises(EmbedderMismatchError, match="--reindex"):
        store.set_embedder(EmbedderInfo("other", "fp2", DIM))
    store.clear()
    store.set_embedder(EmbedderInfo("other", "fp2", 4))
    assert store.embedder().dim == 4


def test_missing_index_gives_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no index in .*neuro index"):
        SQLiteStore(tmp_path / "nothing")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "idx", create=True).close()
    with sqlite3.connect(database_path(tmp_path / "idx")) as conn:
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(StorageError, match="newer than this neuro-bitnet"):
        SQLiteStore(tmp_path / "idx")


@pytest.mark.parametrize("garbage", [b"this is not sqlite at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_corrupt_database_gives_clear_error(tmp_path: Path, garbage: bytes) -> None:
    (tmp_path / "idx").mkdir()
    database_path(tmp_path / "idx").write_bytes(garbage)
    with pytest.raises(StorageError, match="corrupt|not a neuro index"):
        s = SQLiteStore(tmp_path / "idx")
        s.stats()


def test_foreign_sqlite_file_is_not_an_index(tmp_path: Path) -> None:
    (tmp_path / "idx").mkdir()
    with sqlite3.connect(database_path(tmp_path / "idx")) as conn:
        conn.execute("CREATE TABLE other(x)")
    with pytest.raises(StorageError, match="not a neuro index"):
        SQLiteStore(tmp_path / "idx")


def test_vector_cache_follows_writes_from_other_processes(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    with SQLiteStore(tmp_path / "idx", create=True) as a:
        a.set_embedder(EmbedderInfo("tiny", "fp1", DIM))
        add(a, "/a.md", ["one", "two"], unit(rng, 2))
        assert len(a.vector_search(unit(rng, 1)[0], 10)) == 2  # writes the cache
    assert (tmp_path / "idx" / "vectors-cache.npz").is_file()
    with SQLiteStore(tmp_path / "idx") as b:
        add(b, "/b.md", ["three"], unit(rng, 1))
        b.delete_documents(["/a.md"])
    with SQLiteStore(tmp_path / "idx") as c:
        hits = c.vector_search(unit(rng, 1)[0], 10)
        assert [c.get_chunks([h])[h].path for h, _ in hits] == ["/b.md"]


def test_common_terms_are_dropped_from_lexical_queries(store: SQLiteStore) -> None:
    rng = np.random.default_rng(5)
    for d in range(60):
        extra = " zebra" if d == 7 else ""
        add(store, f"/{d}.md", [f"the cat and the dog number{d}{extra}"], unit(rng, 1))
    hits = store.lexical_search("the zebra", 100)
    assert len(hits) == 1 and store.get_chunks([hits[0][0]])[hits[0][0]].path == "/7.md"
    assert len(store.lexical_search("the and", 100)) == 60  # all common: the rarest still matches
    assert store.lexical_search("unknownword", 5) == []
