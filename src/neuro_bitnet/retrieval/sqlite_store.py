"""The embedded store: one SQLite file with documents, chunks (float32 vectors as BLOBs) and an
FTS5 index. Vector search is exact, with the matrix held in memory by numpy.

Each document is replaced in one transaction, so a run killed at any point leaves the database
consistent: a document is either fully indexed with its hash, or absent/old and redone next run.

Chunk ids are never reused (AUTOINCREMENT), and every write bumps a `generation` counter that a
long-lived store (the daemon, MCP) checks before each vector search: a re-index by another
process is seen at the next query, and an id held from an older matrix can never name another
chunk's text.
"""

from __future__ import annotations

import os
import sqlite3
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import filelock
import numpy as np

from neuro_bitnet.retrieval.errors import StorageError
from neuro_bitnet.retrieval.lexical import query_terms, selective_terms
from neuro_bitnet.retrieval.store import (
    EMBEDDER_META_KEYS,
    ChunkRecord,
    DocumentInfo,
    EmbedderInfo,
    StoredChunk,
    check_embedder,
    document_vectors,
    embedder_stats,
)

DB_NAME = "index.sqlite3"
SCHEMA_VERSION = 2  # 2: chunk ids AUTOINCREMENT (never reused)
LOCK_NAME = "index.lock"
CACHE_NAME = "vectors-cache.npz"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    chunks INTEGER NOT NULL,
    indexed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    heading TEXT NOT NULL,
    location TEXT NOT NULL,
    context TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE TABLE IF NOT EXISTS vectors (chunk_id INTEGER PRIMARY KEY, vector BLOB NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_vocab USING fts5vocab(chunks_fts, 'row');
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, context, content='chunks', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text, context) VALUES (new.id, new.text, new.context);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text, context) VALUES ('delete', old.id, old.text, old.context);
    DELETE FROM vectors WHERE chunk_id = old.id;
END;
"""


def _statements(script: str) -> list[str]:
    """The statements of a schema script (triggers kept whole)."""
    statements, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        text = "\n".join(current)
        if text.rstrip().endswith(";") and sqlite3.complete_statement(text):
            statements.append(text)
            current = []
    return statements


def database_path(storage_dir: str | Path) -> Path:
    """The SQLite file inside a storage dir."""
    return Path(storage_dir).expanduser() / DB_NAME


class SQLiteStore:
    """`Store` on SQLite + numpy."""

    def __init__(self, storage_dir: str | Path, *, create: bool = False) -> None:
        self.storage_dir = Path(storage_dir).expanduser()
        self.path = self.storage_dir / DB_NAME
        if not self.path.is_file():
            if not create:
                raise StorageError(
                    f"no index in {self.storage_dir}; build one with: neuro index PATH --storage {self.storage_dir}"
                )
            try:
                self.storage_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create storage dir {self.storage_dir}: {exc.strerror or exc}") from None
        self._matrix: np.ndarray | None = None
        self._ids: np.ndarray | None = None
        self._generation: str | None = None  # the write generation `_matrix` was read at
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open index {self.path}: {exc}") from None
        with self._errors():
            self.conn.execute("PRAGMA foreign_keys=ON")
            version = self._schema_version()
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"index {self.path} has schema {version}, newer than this neuro-bitnet supports "
                    f"({SCHEMA_VERSION}); upgrade neuro-bitnet or rebuild the index with --reindex"
                )
            if create or version:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
            if 0 < version < SCHEMA_VERSION:
                self._migrate()
            if version == 0 and create:
                self.conn.executescript(_SCHEMA)  # idempotent; the version is written last
                with self._transaction():
                    self._set_meta("schema_version", str(SCHEMA_VERSION))
                    self._set_meta("created_at", str(time.time()))
            elif version == 0:
                raise StorageError(f"{self.path} is not a neuro index (no schema); rebuild it with --reindex")

    def _migrate(self) -> None:
        """Bring an older index up to SCHEMA_VERSION in one transaction (ids and vectors are kept)."""
        with self._transaction():
            version = self._schema_version()  # again: another process may have migrated meanwhile
            if version >= SCHEMA_VERSION:
                return
            if version < 2:  # chunks.id becomes AUTOINCREMENT: SQLite can only rebuild the table
                self.conn.execute("DROP TRIGGER IF EXISTS chunks_ai")
                self.conn.execute("DROP TRIGGER IF EXISTS chunks_ad")
                self.conn.execute("ALTER TABLE chunks RENAME TO chunks_v1")  # takes index chunks_doc along
                statements = _statements(_SCHEMA)
                for statement in statements:
                    if statement.startswith("CREATE TABLE"):
                        self.conn.execute(statement)
                columns = "id, doc_id, ordinal, text, heading, location, context"
                self.conn.execute(f"INSERT INTO chunks({columns}) SELECT {columns} FROM chunks_v1")  # no triggers yet
                self.conn.execute("DROP TABLE chunks_v1")
                for statement in statements:  # the index and the triggers again
                    if statement.startswith(("CREATE INDEX", "CREATE TRIGGER")):
                        self.conn.execute(statement)
            self._set_meta("schema_version", str(SCHEMA_VERSION))
            self._bump_generation()

    # -- plumbing ---------------------------------------------------------------------------------

    def _errors(self):
        store = self

        class _Guard:
            def __enter__(self) -> None:
                return None

            def __exit__(self, kind, exc, tb) -> bool:
                if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
                    raise StorageError(
                        f"index {store.path} is corrupt or not an index ({exc}); "
                        "delete it or rebuild with --reindex"
                    ) from None
                if isinstance(exc, sqlite3.OperationalError):
                    if "locked" in str(exc) or "busy" in str(exc):
                        raise StorageError(f"index {store.path} is busy (another neuro index is running?)") from None
                    raise StorageError(f"index {store.path}: {exc}") from None
                return False

        return _Guard()

    def _transaction(self):
        conn = self.conn

        class _Tx:
            def __enter__(self) -> None:
                conn.execute("BEGIN IMMEDIATE")

            def __exit__(self, kind, exc, tb) -> bool:
                conn.execute("COMMIT" if exc is None else "ROLLBACK")
                return False

        return _Tx()

    def _schema_version(self) -> int:
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            return 0
        row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        try:
            return int(row[0]) if row else 0
        except ValueError:
            raise StorageError(f"index {self.path} has an unreadable schema version") from None

    def _meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        """A free-form setting stored with the index (e.g. chunking parameters)."""
        with self._errors():
            return self._meta(key)

    def set_meta(self, key: str, value: str) -> None:
        """Store a free-form setting."""
        with self._errors(), self._transaction():
            self._set_meta(key, value)

    # -- Store protocol ---------------------------------------------------------------------------

    @property
    def location(self) -> str:
        return str(self.storage_dir)

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        lock = filelock.FileLock(str(self.storage_dir / LOCK_NAME))
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            raise StorageError(
                f"another `neuro index` is updating {self.storage_dir}; try again when it is done"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def optimize(self) -> None:
        with self._errors():
            self.conn.execute("PRAGMA optimize")

    def embedder(self) -> EmbedderInfo | None:
        with self._errors():
            meta = {key: self._meta(key) for key in EMBEDDER_META_KEYS}
        return EmbedderInfo.from_meta(meta)

    def set_embedder(self, info: EmbedderInfo) -> None:
        current = self.embedder()
        check_embedder(current, info)
        if current is not None:
            return
        with self._errors(), self._transaction():
            for key, value in info.meta().items():
                self._set_meta(key, value)

    def documents(self) -> dict[str, DocumentInfo]:
        with self._errors():
            rows = self.conn.execute("SELECT path, sha256, size, mtime_ns, chunks FROM documents").fetchall()
        return {r[0]: DocumentInfo(*r) for r in rows}

    def replace_document(self, doc: DocumentInfo, chunks: Sequence[ChunkRecord], vectors: np.ndarray) -> None:
        vectors = document_vectors(chunks, vectors, self.embedder(), self.location)
        context = Path(doc.path).name
        with self._errors(), self._transaction():
            self._delete(doc.path)
            cur = self.conn.execute(
                "INSERT INTO documents(path, sha256, size, mtime_ns, chunks, indexed_at) VALUES (?,?,?,?,?,?)",
                (doc.path, doc.sha256, doc.size, doc.mtime_ns, len(chunks), time.time()),
            )
            doc_id = cur.lastrowid
            for i, c in enumerate(chunks):
                chunk_id = self.conn.execute(
                    "INSERT INTO chunks(doc_id, ordinal, text, heading, location, context) VALUES (?,?,?,?,?,?)",
                    (doc_id, c.ordinal, c.text, c.heading, c.location, f"{context} {c.heading}".strip()),
                ).lastrowid
                self.conn.execute("INSERT INTO vectors(chunk_id, vector) VALUES (?, ?)",
                                  (chunk_id, vectors[i].tobytes()))
            self._bump_generation()
        self._matrix = None

    def _bump_generation(self) -> None:
        """Count writes, so a cached vector matrix knows when it is stale (call inside a transaction)."""
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES ('generation', '1') "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )

    def touch_document(self, path: str, size: int, mtime_ns: int) -> None:
        with self._errors(), self._transaction():
            self.conn.execute("UPDATE documents SET size=?, mtime_ns=? WHERE path=?", (size, mtime_ns, path))

    def _delete(self, path: str) -> None:
        row = self.conn.execute("SELECT id FROM documents WHERE path=?", (path,)).fetchone()
        if row:
            self.conn.execute("DELETE FROM chunks WHERE doc_id=?", (row[0],))
            self.conn.execute("DELETE FROM documents WHERE id=?", (row[0],))

    def delete_documents(self, paths: Sequence[str]) -> None:
        if not paths:
            return
        with self._errors(), self._transaction():
            for path in paths:
                self._delete(path)
            self._bump_generation()
        self._matrix = None

    def clear(self) -> None:
        with self._errors(), self._transaction():
            self.conn.execute("DELETE FROM chunks")
            self.conn.execute("DELETE FROM documents")
            self.conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('delete-all')")
            self.conn.execute("DELETE FROM vectors")
            self.conn.execute("DELETE FROM meta WHERE key NOT IN ('schema_version', 'created_at', 'generation')")
            self._bump_generation()
        self._matrix = None

    def _load_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """The (n, dim) matrix and chunk ids as of the database's current write generation
        (checked on every call, so writes by other processes are seen): kept in memory, else from
        the cache file when it matches, else read from SQLite (and the cache rewritten)."""
        with self._errors():
            generation = self._meta("generation") or "0"
        if self._matrix is None or self._generation != generation:
            self._matrix = self._ids = None
            info = self.embedder()
            dim = info.dim if info else 0
            cache = self.storage_dir / CACHE_NAME
            loaded = self._read_cache(cache, generation, dim)
            if loaded is None:
                with self._errors():
                    # One read transaction: the generation and the vectors come from one snapshot.
                    self.conn.execute("BEGIN")
                    try:
                        generation = self._meta("generation") or "0"
                        rows = self.conn.execute("SELECT chunk_id, vector FROM vectors ORDER BY chunk_id").fetchall()
                    finally:
                        self.conn.execute("COMMIT")
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                blob = b"".join(r[1] for r in rows)
                if rows and len(blob) != len(rows) * dim * 4:
                    raise StorageError(f"index {self.path} has vectors of the wrong size; rebuild it with --reindex")
                matrix = np.frombuffer(blob, dtype=np.float32).reshape(len(rows), dim)
                self._write_cache(cache, generation, matrix, ids)
                loaded = matrix, ids
            self._matrix, self._ids = loaded
            self._generation = generation
        assert self._matrix is not None and self._ids is not None
        return self._matrix, self._ids

    @staticmethod
    def _read_cache(cache: Path, generation: str, dim: int) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            with np.load(cache, allow_pickle=False) as data:
                if str(data["generation"]) != generation or data["matrix"].shape[1:] != (dim,):
                    return None
                return data["matrix"], data["ids"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None

    @staticmethod
    def _write_cache(cache: Path, generation: str, matrix: np.ndarray, ids: np.ndarray) -> None:
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, generation=np.array(generation), matrix=matrix, ids=ids)
            os.replace(tmp, cache)
        except OSError:  # a read-only storage dir only loses the cache
            tmp.unlink(missing_ok=True)

    def vector_search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        matrix, ids = self._load_vectors()
        if len(ids) == 0 or k <= 0:
            return []
        scores = matrix @ np.asarray(query, dtype=np.float32)
        k = min(k, len(ids))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(ids[i]), float(scores[i])) for i in top]

    def lexical_search(self, query: str, k: int) -> list[tuple[int, float]]:
        terms = query_terms(query)
        if not terms or k <= 0:
            return []
        with self._errors():
            terms = self._selective_terms(terms)
            if not terms:
                return []
            expression = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
            rows = self.conn.execute(
                "SELECT rowid, bm25(chunks_fts) AS s FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY s LIMIT ?",
                (expression, k),
            ).fetchall()
        return [(int(r[0]), -float(r[1])) for r in rows]

    def _selective_terms(self, terms: list[str]) -> list[str]:
        """`lexical.selective_terms` with chunk counts from the FTS vocabulary (which holds terms
        folded as `query_terms` folds them)."""
        total = self.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        marks = ",".join("?" * len(terms))
        df = dict(self.conn.execute(f"SELECT term, doc FROM chunks_vocab WHERE term IN ({marks})", terms).fetchall())
        return selective_terms(terms, df, total)

    def get_chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._errors():
            rows = self.conn.execute(
                "SELECT c.id, d.path, c.ordinal, c.text, c.heading, c.location FROM chunks c "
                f"JOIN documents d ON d.id = c.doc_id WHERE c.id IN ({marks})",
                list(ids),
            ).fetchall()
        return {r[0]: StoredChunk(*r) for r in rows}

    def iter_chunk_texts(self) -> Iterator[str]:
        """Every chunk's text (used by tests and tools)."""
        with self._errors():
            for (text,) in self.conn.execute("SELECT text FROM chunks ORDER BY id"):
                yield text

    def stats(self) -> dict:
        with self._errors():
            docs = self.conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), MAX(indexed_at) FROM documents"
            ).fetchone()
            chunks = self.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        info = self.embedder()
        size = sum(p.stat().st_size for p in self.storage_dir.glob(DB_NAME + "*") if p.is_file())
        return {
            "storage": str(self.storage_dir),
            "database": str(self.path),
            "schema_version": SCHEMA_VERSION,
            "documents": docs[0],
            "source_bytes": docs[1],
            "chunks": chunks,
            "size_bytes": size,
            **embedder_stats(info),
            "last_indexed_at": docs[2],
        }

    def check(self) -> list[str]:
        """Consistency problems (empty when sound): SQLite integrity, chunk counts, FTS."""
        problems = []
        with self._errors():
            result = self.conn.execute("PRAGMA integrity_check").fetchone()[0]
            if result != "ok":
                problems.append(f"integrity_check: {result}")
            bad = self.conn.execute(
                "SELECT d.path FROM documents d LEFT JOIN chunks c ON c.doc_id=d.id "
                "GROUP BY d.id HAVING COUNT(c.id) != d.chunks"
            ).fetchall()
            problems += [f"chunk count mismatch: {r[0]}" for r in bad]
            orphans = self.conn.execute(
                "SELECT COUNT(*) FROM chunks WHERE doc_id NOT IN (SELECT id FROM documents)"
            ).fetchone()[0]
            if orphans:
                problems.append(f"{orphans} orphan chunks")
            unpaired = self.conn.execute(
                "SELECT (SELECT COUNT(*) FROM chunks WHERE id NOT IN (SELECT chunk_id FROM vectors)) + "
                "(SELECT COUNT(*) FROM vectors WHERE chunk_id NOT IN (SELECT id FROM chunks))"
            ).fetchone()[0]
            if unpaired:
                problems.append(f"{unpaired} chunks without vector or vectors without chunk")
            try:
                self.conn.execute("INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)")
            except sqlite3.DatabaseError as exc:
                problems.append(f"fts: {exc}")
        return problems

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:
            pass

    def __enter__(self) -> "SQLiteStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
