"""Both stores (SQLite and PostgreSQL, through the one Store interface): replace/delete, vector
search, lexical search, embedder guard, ids, schema versions; then what is particular to each."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from neuro_bitnet.retrieval.errors import EmbedderMismatchError, StorageError
from neuro_bitnet.retrieval.sqlite_store import SCHEMA_VERSION, SQLiteStore, database_path
from neuro_bitnet.retrieval.store import ChunkRecord, DocumentInfo, EmbedderInfo, Store, is_database_url, open_store

DIM = 8


def unit(rng, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def add(store: Store, path: str, texts: list[str], vectors: np.ndarray) -> None:
    doc = DocumentInfo(path, "h-" + path, 10, 1, len(texts))
    store.replace_document(doc, [ChunkRecord(i, t, "Head", f"line {i}") for i, t in enumerate(texts)], vectors)


@pytest.fixture
def store(storage_spec):
    s = open_store(storage_spec, create=True)
    s.set_embedder(EmbedderInfo("tiny", "fp1", DIM))
    yield s
    s.close()


def test_vector_search_is_exact(store: Store) -> None:
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


def test_zero_vectors_score_finitely(store: Store) -> None:
    """An embedder's zero vector (a text with no known word) has no direction: a zero query finds
    nothing by meaning, and a stored zero vector never gets a NaN score (pgvector's cosine)."""
    rng = np.random.default_rng(3)
    add(store, "/a.md", ["known words", "no known word"], np.vstack([unit(rng, 1), np.zeros((1, DIM), np.float32)]))
    assert all(score == 0.0 for _, score in store.vector_search(np.zeros(DIM, np.float32), 5))
    hits = store.vector_search(unit(rng, 1)[0], 5)
    assert hits and all(np.isfinite(score) for _, score in hits)


def test_replace_and_delete_keep_fts_in_step(store: Store) -> None:
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


def test_lexical_query_syntax_is_never_an_error(store: Store) -> None:
    add(store, "/a.md", ['He said "hello" AND NOT (bye) * near'], unit(np.random.default_rng(3), 1))
    for query in ['"hello', "AND OR NOT", "(bye", "*", "near(", "", "¿¡"]:
        store.lexical_search(query, 5)
    assert store.lexical_search('"hello" NOT', 5)


def test_embedder_mismatch_is_refused(store: Store) -> None:
    store.set_embedder(EmbedderInfo("tiny-renamed", "fp1", DIM))  # same weights: fine
    with pytest.raises(EmbedderMismatchError, match="--reindex"):
        store.set_embedder(EmbedderInfo("other", "fp2", DIM))
    store.clear()
    store.set_embedder(EmbedderInfo("other", "fp2", 4))
    assert store.embedder().dim == 4


def test_vectors_of_another_dimension_are_refused_and_change_nothing(store: Store) -> None:
    """A document whose vectors do not have the recorded embedder's dimension is refused with one
    message by both stores, before anything is written: the old version of the document stays."""
    rng = np.random.default_rng(4)
    add(store, "/a.md", ["first text", "second text"], unit(rng, 2))
    query = unit(rng, 1)[0]
    before = (store.documents(), list(store.iter_chunk_texts()), store.vector_search(query, 10))
    for path in ("/a.md", "/b.md"):  # a replaced document and a new one
        with pytest.raises(StorageError, match=rf"takes vectors of {DIM} dims \(embedder tiny\); "
                                               r"this document's vectors have shape \(1, 4\)"):
            add(store, path, ["a text embedded elsewhere"], np.ones((1, 4), np.float32))
    assert (store.documents(), list(store.iter_chunk_texts()), store.vector_search(query, 10)) == before
    assert store.check() == []


def test_documents_need_a_recorded_embedder(storage_spec) -> None:
    with open_store(storage_spec, create=True) as store:
        with pytest.raises(StorageError, match="records no embedder"):
            add(store, "/a.md", ["text"], unit(np.random.default_rng(5), 1))
        assert store.documents() == {} and store.check() == []


def test_missing_index_gives_clear_error(storage_spec) -> None:
    with pytest.raises(StorageError, match="no index in .*neuro index"):
        open_store(storage_spec)


def set_schema_version(spec, version: int) -> None:
    """Write another schema version into an index, as a later release would."""
    if is_database_url(spec):
        import psycopg

        with psycopg.connect(spec, autocommit=True) as conn:
            conn.execute("UPDATE neuro_meta SET value = %s WHERE key = 'schema_version'", (str(version),))
        return
    with sqlite3.connect(database_path(spec)) as conn:
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version),))


def test_newer_schema_is_refused(storage_spec) -> None:
    with open_store(storage_spec, create=True) as store:
        version = store.stats()["schema_version"]
    set_schema_version(storage_spec, version + 1)
    with pytest.raises(StorageError, match="newer than this neuro-bitnet"):
        open_store(storage_spec)


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


def test_common_terms_are_dropped_from_lexical_queries(store: Store) -> None:
    rng = np.random.default_rng(5)
    for d in range(60):
        extra = " zebra" if d == 7 else ""
        add(store, f"/{d}.md", [f"the cat and the dog number{d}{extra}"], unit(rng, 1))
    store.optimize()  # PostgreSQL takes the shares of common terms from the planner statistics
    hits = store.lexical_search("the zebra", 100)
    assert len(hits) == 1 and store.get_chunks([hits[0][0]])[hits[0][0]].path == "/7.md"
    assert len(store.lexical_search("the and", 100)) == 60  # all common: the rarest still matches
    assert store.lexical_search("unknownword", 5) == []


def test_accented_terms_are_found_in_a_large_index(store: Store) -> None:
    """Above the stopword threshold the vocabulary lookup must use the accent-folded term."""
    rng = np.random.default_rng(6)
    for d in range(80):
        extra = {3: " café con leche", 9: " una canción triste"}.get(d, "")
        add(store, f"/{d}.md", [f"texto número {d}{extra}"], unit(rng, 1))
    store.optimize()
    assert store.stats()["chunks"] > 50
    for query, expected in (("café", "/3.md"), ("canción", "/9.md"), ("CANCIÓN", "/9.md"), ("cafe", "/3.md")):
        hits = store.lexical_search(query, 10)
        assert [store.get_chunks([h])[h].path for h, _ in hits] == [expected], query


REINDEX_SCRIPT = """
import sys
import numpy as np
from neuro_bitnet.retrieval.store import ChunkRecord, DocumentInfo, open_store
with open_store(sys.argv[1]) as store:
    store.delete_documents(["/old.md"])
    vectors = np.load(sys.argv[2])
    store.replace_document(DocumentInfo("/new.md", "h-new", 10, 1, 2),
                           [ChunkRecord(0, "diesel engine piston", "", ""), ChunkRecord(1, "fuel pump", "", "")],
                           vectors)
"""


def test_long_lived_store_sees_a_reindex_by_another_process(tmp_path: Path, storage_spec) -> None:
    """A daemon's open store: after another process deletes and re-adds documents, the next query
    finds the new chunks by vector and never attaches an old vector to a new chunk's text."""
    import subprocess
    import sys

    rng = np.random.default_rng(7)
    old_vecs, new_vecs = unit(rng, 2), unit(rng, 2)
    np.save(tmp_path / "new.npy", new_vecs)
    with open_store(storage_spec, create=True) as daemon:
        daemon.set_embedder(EmbedderInfo("tiny", "fp1", DIM))
        add(daemon, "/old.md", ["old one", "old two"], old_vecs)
        old_ids = {cid for cid, _ in daemon.vector_search(old_vecs[0], 10)}
        assert len(old_ids) == 2
        subprocess.run([sys.executable, "-c", REINDEX_SCRIPT, str(storage_spec), str(tmp_path / "new.npy")],
                       check=True, timeout=120)
        hits = daemon.vector_search(new_vecs[0], 10)
        assert len(hits) == 2 and hits[0][1] == pytest.approx(1.0, abs=1e-5)
        assert not old_ids & {cid for cid, _ in hits}  # ids are never reused
        chunk = daemon.get_chunks([hits[0][0]])[hits[0][0]]
        assert (chunk.path, chunk.text) == ("/new.md", "diesel engine piston")
        assert daemon.get_chunks(sorted(old_ids)) == {}


def test_chunk_ids_are_not_reused_after_deletion(store: Store) -> None:
    rng = np.random.default_rng(8)
    add(store, "/a.md", ["one", "two"], unit(rng, 2))
    first = {cid for cid, _ in store.vector_search(unit(rng, 1)[0], 10)}
    store.delete_documents(["/a.md"])
    store.clear()
    store.set_embedder(EmbedderInfo("tiny", "fp1", DIM))
    add(store, "/b.md", ["three", "four"], unit(rng, 2))
    second = {cid for cid, _ in store.vector_search(unit(rng, 1)[0], 10)}
    assert len(second) == 2 and min(second) > max(first)


def test_schema_1_index_is_migrated_in_place(tmp_path: Path) -> None:
    """An index written by the previous release (chunk ids without AUTOINCREMENT) is upgraded on
    open: documents, ids, vectors and the FTS index survive, and ids are not reused afterwards."""
    from neuro_bitnet.retrieval import sqlite_store

    (tmp_path / "idx").mkdir()
    rng = np.random.default_rng(9)
    vecs = unit(rng, 3)
    with sqlite3.connect(database_path(tmp_path / "idx")) as conn:
        conn.executescript(sqlite_store._SCHEMA.replace(" AUTOINCREMENT", ""))
        meta = [("schema_version", "1"), ("embedder", "tiny"), ("embedder_fingerprint", "fp1"),
                ("embedder_dim", str(DIM))]
        conn.executemany("INSERT INTO meta VALUES (?, ?)", meta)
        conn.execute("INSERT INTO documents VALUES (1, '/a.md', 'h', 10, 1, 3, 0)")
        for i, text in enumerate(["alpha words", "beta words", "gamma words"]):
            conn.execute("INSERT INTO chunks VALUES (?, 1, ?, ?, '', '', 'a.md')", (i + 1, i, text))
            conn.execute("INSERT INTO vectors VALUES (?, ?)", (i + 1, vecs[i].tobytes()))
    with SQLiteStore(tmp_path / "idx") as store:
        assert store.get_meta("schema_version") == str(SCHEMA_VERSION) == "2"
        assert store.check() == []
        top = store.vector_search(vecs[2], 1)[0][0]
        assert top == 3 and store.get_chunks([top])[top].text == "gamma words"
        assert [cid for cid, _ in store.lexical_search("beta", 5)] == [2]
        store.delete_documents(["/a.md"])
        add(store, "/b.md", ["delta"], unit(rng, 1))
        assert [cid for cid, _ in store.vector_search(unit(rng, 1)[0], 5)] == [4]
        assert store.check() == []


WRITER_SCRIPT = """
import sys
import numpy as np
from neuro_bitnet.retrieval.store import ChunkRecord, DocumentInfo, open_store
spec, name, ready, go = sys.argv[1:5]
rng = np.random.default_rng(abs(hash(name)) % 1000)
with open_store(spec) as store:
    open(ready, "w").close()
    while not __import__("os").path.exists(go):
        pass
    for round_ in range(6):
        for d in range(8) if name == "a" else reversed(range(8)):
            n = 1 + (d + round_) % 3
            v = rng.normal(size=(n, 8)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            chunks = [ChunkRecord(i, f"{name} round{round_} doc{d} part{i}", "", "") for i in range(n)]
            store.replace_document(DocumentInfo(f"/shared/{d}.md", f"{name}{round_}", 1, 1, n), chunks, v)
        if round_ == 3:
            store.delete_documents([f"/shared/{d}.md" for d in range(0, 8, 2)])
"""


def test_two_writers_at_once_leave_every_document_whole(tmp_path: Path, storage_spec) -> None:
    """Two processes replace (and delete) the same documents at the same time, in opposite orders,
    without `neuro index`'s lock: every document ends up with the chunks of exactly one write."""
    import subprocess
    import sys

    with open_store(storage_spec, create=True) as store:
        store.set_embedder(EmbedderInfo("tiny", "fp1", DIM))
    go = tmp_path / "go"
    procs = []
    for name in ("a", "b"):
        ready = tmp_path / f"ready-{name}"
        procs.append((ready, subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(storage_spec), name,
                                               str(ready), str(go)], stderr=subprocess.PIPE, text=True)))
    for ready, proc in procs:
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read()
    go.touch()
    for _, proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    with open_store(storage_spec) as store:
        assert store.check() == []
        docs = store.documents()
        assert set(docs) == {f"/shared/{d}.md" for d in range(8)}
        texts = list(store.iter_chunk_texts())
        for path, doc in docs.items():
            d = path.split("/")[-1][:-3]
            mine = [t for t in texts if f" doc{d} " in t]
            writer, round_ = doc.sha256[0], doc.sha256[1:]
            assert sorted(mine) == [f"{writer} round{round_} doc{d} part{i}" for i in range(doc.chunks)]


# -- PostgreSQL only --------------------------------------------------------------------------------


def test_postgres_schema_migrations_run_in_order_and_keep_data(pg_server, monkeypatch) -> None:
    """An index at schema 1 is brought to a later version on open by the migrations after it, in
    one transaction each; its documents survive and the version is recorded."""
    from neuro_bitnet.retrieval import postgres_store

    url = pg_server.new_database()
    rng = np.random.default_rng(10)
    with open_store(url, create=True) as store:
        store.set_embedder(EmbedderInfo("tiny", "fp1", DIM))
        add(store, "/a.md", ["alpha words"], unit(rng, 1))
        assert store.get_meta("schema_version") == "1"
    step = ("ALTER TABLE neuro_documents ADD COLUMN IF NOT EXISTS note TEXT NOT NULL DEFAULT 'migrated'",)
    monkeypatch.setattr(postgres_store, "MIGRATIONS", {**postgres_store.MIGRATIONS, 2: step})
    monkeypatch.setattr(postgres_store, "SCHEMA_VERSION", 2)
    with open_store(url) as store:
        assert store.get_meta("schema_version") == "2"
        assert store.conn.execute("SELECT path, note FROM neuro_documents").fetchall() == [("/a.md", "migrated")]
        assert [store.get_chunks([c])[c].text for c, _ in store.lexical_search("alpha", 5)] == ["alpha words"]
        assert store.check() == []


def test_postgres_lexical_search_ignores_accents_without_unaccent(pg_server) -> None:
    """Text and queries are folded in Python, so accents never matter, whichever way round."""
    with open_store(pg_server.new_database(), create=True) as store:
        assert store.conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'unaccent'").fetchone() is None
        store.set_embedder(EmbedderInfo("tiny", "fp1", DIM))
        rng = np.random.default_rng(11)
        add(store, "/es.md", ["Una canción en el café"], unit(rng, 1))
        add(store, "/en.md", ["a song in the cafe"], unit(rng, 1))
        for query, expected in (("cancion", {"/es.md"}), ("CANCIÓN", {"/es.md"}), ("café", {"/es.md", "/en.md"})):
            found = {store.get_chunks([c])[c].path for c, _ in store.lexical_search(query, 5)}
            assert found == expected, query


def test_postgres_connection_errors_are_one_line(tmp_path: Path) -> None:
    url = f"postgresql://nobody@/neuro?host={tmp_path}&port=1"
    with pytest.raises(StorageError, match="^cannot connect to postgresql://nobody@/neuro") as err:
        open_store(url)
    assert "\n" not in str(err.value)


def test_postgres_password_is_not_shown(pg_server) -> None:
    from neuro_bitnet.retrieval.store import describe

    assert describe("postgresql://user:s3cret@db.example/neuro") == "postgresql://user:***@db.example/neuro"
    assert describe("postgres://db.example/neuro") == "postgres://db.example/neuro"


def test_missing_driver_names_the_extra(monkeypatch) -> None:
    from neuro_bitnet.retrieval import postgres_store

    monkeypatch.setattr(postgres_store, "psycopg", None)
    with pytest.raises(StorageError, match=r"pip install 'neuro-bitnet\[postgres\]'"):
        open_store("postgresql://localhost/neuro")


def test_postgres_store_recovers_from_a_lost_connection(pg_server) -> None:
    """The server ends the session (as a restart or failover would): that call fails with a
    one-line error, the next one works on a new connection."""
    import psycopg

    url = pg_server.new_database()
    with open_store(url, create=True) as store:
        store.set_embedder(EmbedderInfo("tiny", "fp1", DIM))
        add(store, "/a.md", ["alpha words"], unit(np.random.default_rng(12), 1))
        pid = store.conn.info.backend_pid
        with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StorageError, match="^index postgresql://"):
            store.documents()
        assert set(store.documents()) == {"/a.md"} and store.conn.info.backend_pid != pid


def test_postgres_one_index_per_schema(pg_server) -> None:
    """Two indexes in one database, one per schema (chosen with search_path in the URL): separate
    documents, and each has its own writer lock."""
    import psycopg

    url = pg_server.new_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute("CREATE SCHEMA a")
        conn.execute("CREATE SCHEMA b")
    urls = {name: f"{url}&options=-csearch_path%3D{name},public" for name in ("a", "b")}
    for name, spec in urls.items():
        with open_store(spec, create=True) as store:
            store.set_embedder(EmbedderInfo("tiny", "fp1", DIM))
            add(store, f"/{name}.md", [f"doc {name}"], unit(np.random.default_rng(13), 1))
    with open_store(urls["a"]) as a, open_store(urls["b"]) as b, a.writer_lock(), b.writer_lock():
        assert set(a.documents()) == {"/a.md"} and set(b.documents()) == {"/b.md"}
        assert a.check() == [] and b.check() == []
