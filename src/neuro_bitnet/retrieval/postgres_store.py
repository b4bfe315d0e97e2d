"""The shared store: PostgreSQL with pgvector, for an index that several machines or `neuro serve`
replicas reach (`--storage postgresql://user@host/db`). Needs `pip install 'neuro-bitnet[postgres]'`
(psycopg 3 and pgvector's Python package) and the `vector` extension in the database.

- Vectors: a `vector(dim)` column with an HNSW index (cosine). The index is built in one go by
  `optimize()` (end of `neuro index`) when it does not exist yet: building it over a full table is
  far faster than growing it one insert at a time, so a first run fills the table and then builds
  it; later runs insert into it. Until it exists a vector search is an exact scan (correct, slower).
  Each search sets `hnsw.ef_search` to twice the candidates asked for (at least 100): pgvector
  returns at most ef_search rows, and a wider search finds the exact neighbours more often.
- Words: a `tsvector` column (the `simple` configuration, any language) with a GIN index. Text
  and queries are accent-folded in Python (`lexical.fold_accents`) before `to_tsvector`, so
  matching ignores accents without the `unaccent` extension (which not every server has).
  Query terms in more than a fifth of the chunks are dropped, as on SQLite; their shares come
  from the planner statistics (`pg_stats`), which `optimize()` (end of `neuro index`) and
  autovacuum refresh. Then the rarest terms are kept while their matches add up to at most
  MAX_RANKED_ROWS chunks, so that ranking (`ts_rank`) stays fast at any index size.
- Every write is one transaction; a document is replaced by an upsert of its row (which locks
  it), so two indexers writing the same document serialize instead of duplicating it. `neuro
  index` also holds a session advisory lock for its whole run (`writer_lock`); a killed process
  loses its session and with it the lock.
- The tables are `neuro_meta`, `neuro_documents` and `neuro_chunks` in the connection's current
  schema; pick another schema (one index per schema) with the libpq option
  `?options=-csearch_path%3Dmyschema,public` (the second schema: where the vector extension is).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np

from neuro_bitnet.retrieval.errors import StorageError
from neuro_bitnet.retrieval.lexical import fold_accents, query_terms, selective_terms
from neuro_bitnet.retrieval.store import (
    EMBEDDER_META_KEYS,
    ChunkRecord,
    DocumentInfo,
    EmbedderInfo,
    StoredChunk,
    check_embedder,
    describe,
    document_vectors,
    embedder_stats,
)

try:
    import psycopg
    from pgvector.psycopg import register_vector
except ImportError:  # the optional extra is not installed
    psycopg = None  # type: ignore[assignment]

INSTALL_HINT = "pip install 'neuro-bitnet[postgres]'"
SCHEMA_VERSION = 1
TS_CONFIG = "simple"
HNSW_INDEX = "neuro_chunks_embedding_hnsw"
# Lexical search ranks at most about this many matching chunks (see _affordable).
MAX_RANKED_ROWS = 4000
BUILD_MEMORY = "512MB"  # maintenance_work_mem while the HNSW index is built (in memory up to this)
# Advisory lock keys (class, object): the object is hashtext(current_schema()), so that indexes in
# different schemas of one database do not block each other.
_WRITER_LOCK = 0x6E657572  # "neur": one `neuro index` run at a time
_DDL_LOCK = 0x6E657573  # schema migrations, the embedder and clear()

# Migrations by the version they bring the schema to; each runs in one transaction with the
# version written at its end, so a database is always at exactly one version.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE IF NOT EXISTS neuro_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE IF NOT EXISTS neuro_documents (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            sha256 TEXT NOT NULL,
            size BIGINT NOT NULL,
            mtime_ns BIGINT NOT NULL,
            chunks INTEGER NOT NULL,
            indexed_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS neuro_chunks (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            doc_id BIGINT NOT NULL REFERENCES neuro_documents(id) ON DELETE CASCADE,
            ordinal INTEGER NOT NULL,
            text TEXT NOT NULL,
            heading TEXT NOT NULL,
            location TEXT NOT NULL,
            context TEXT NOT NULL,
            embedding vector NOT NULL,
            tsv tsvector NOT NULL
        )""",
        # Kept in the row, not in TOAST: ranking reads every matching row's tsvector, and the
        # planner prices a scan by the table's own pages (with TOAST it picks scans that detoast all).
        "ALTER TABLE neuro_chunks ALTER COLUMN tsv SET STORAGE MAIN",
        "CREATE INDEX IF NOT EXISTS neuro_chunks_doc ON neuro_chunks(doc_id)",
        "CREATE INDEX IF NOT EXISTS neuro_chunks_tsv ON neuro_chunks USING gin(tsv)",
    ),
}


def _affordable(terms: list[str], df: dict[str, int]) -> list[str]:
    """The rarest terms whose matches add up to at most MAX_RANKED_ROWS (at least one term):
    ranking reads every matching row, and a term in thousands of chunks adds little to the top
    of the list that its rarer companions do not already decide."""
    kept: list[str] = []
    rows = 0
    for term in sorted(terms, key=lambda t: df.get(t, 0)):
        rows += df.get(term, 0)
        if kept and rows > MAX_RANKED_ROWS:
            break
        kept.append(term)
    return kept


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PostgresStore:
    """`Store` on PostgreSQL + pgvector (see the module docstring)."""

    def __init__(self, url: str, *, create: bool = False) -> None:
        self.url = url
        self._location = describe(url)
        if psycopg is None:
            raise StorageError(f"--storage {self._location} needs the PostgreSQL driver: {INSTALL_HINT}")
        try:
            self.conn = psycopg.connect(url, autocommit=True, connect_timeout=15)
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to {self._location}: {_first_line(exc)}") from None
        try:
            with self._errors():
                self._open(create)
        except BaseException:
            self.conn.close()
            raise

    def _open(self, create: bool) -> None:
        if not self._has_extension():
            if not create:
                raise StorageError(self._no_index())
            try:
                self.conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except psycopg.Error as exc:
                if self._has_extension():  # created by another process at the same moment
                    return self._open(create)
                raise StorageError(
                    f"{self._location} has no pgvector extension and it cannot be created here "
                    f"({_first_line(exc)}); a database owner must run: CREATE EXTENSION vector"
                ) from None
        register_vector(self.conn)
        version = self._schema_version()
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"index {self._location} has schema {version}, newer than this neuro-bitnet supports "
                f"({SCHEMA_VERSION}); upgrade neuro-bitnet or rebuild the index with --reindex"
            )
        if version == 0 and not create:
            raise StorageError(self._no_index())
        if version < SCHEMA_VERSION:
            self._migrate()

    def _no_index(self) -> str:
        return f"no index in {self._location}; build one with: neuro index PATH --storage {self._location}"

    def _has_extension(self) -> bool:
        return self.conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is not None

    def _schema_version(self) -> int:
        if self._row("SELECT to_regclass('neuro_meta')")[0] is None:
            return 0
        row = self.conn.execute("SELECT value FROM neuro_meta WHERE key = 'schema_version'").fetchone()
        try:
            return int(row[0]) if row else 0
        except ValueError:
            raise StorageError(f"index {self._location} has an unreadable schema version") from None

    def _migrate(self) -> None:
        """Apply the missing migrations, each in its own transaction, under the DDL lock (another
        process may be migrating the same database at the same moment)."""
        for target in sorted(MIGRATIONS):
            with self.conn.transaction():
                self._ddl_lock()
                if self._schema_version() >= target:
                    continue
                for statement in MIGRATIONS[target]:
                    self.conn.execute(statement)
                self._set_meta("schema_version", str(target))
                self.conn.execute(
                    "INSERT INTO neuro_meta(key, value) VALUES ('created_at', %s) ON CONFLICT (key) DO NOTHING",
                    (str(time.time()),),
                )

    # -- plumbing ---------------------------------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Database errors as one-line StorageErrors. A lost connection (server restart, failover)
        fails this call and is replaced, so a long-lived store (the daemon's) recovers at the next."""
        try:
            yield
        except StorageError:
            raise
        except psycopg.Error as exc:
            if self.conn.broken:
                self._reconnect()
            raise StorageError(f"index {self._location}: {_first_line(exc)}") from None

    def _reconnect(self) -> None:
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=15)
            register_vector(conn)
        except psycopg.Error:
            return  # still down: the next call tries again
        self.conn.close()
        self.conn = conn

    def _row(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
        """The one row a query returns (aggregates, RETURNING)."""
        row = self.conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
        if row is None:
            raise StorageError(f"index {self._location}: no row from {sql.split()[0]}")
        return row

    def _ddl_lock(self) -> None:
        self.conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", (_DDL_LOCK,))

    def _meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM neuro_meta WHERE key = %s", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO neuro_meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (key, value),
        )

    def get_meta(self, key: str) -> str | None:
        with self._errors():
            return self._meta(key)

    def set_meta(self, key: str, value: str) -> None:
        with self._errors():
            self._set_meta(key, value)

    # -- Store protocol ---------------------------------------------------------------------------

    @property
    def location(self) -> str:
        return self._location

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        with self._errors():
            got = self._row("SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))", (_WRITER_LOCK,))[0]
        if not got:
            raise StorageError(f"another `neuro index` is updating {self._location}; try again when it is done")
        try:
            yield
        finally:
            try:
                self.conn.execute("SELECT pg_advisory_unlock(%s, hashtext(current_schema()))", (_WRITER_LOCK,))
            except psycopg.Error:  # a lost connection has released it already
                pass

    def optimize(self) -> None:
        """Build the HNSW index if it is missing (and an embedder is recorded), then refresh the
        planner statistics the lexical search reads."""
        with self._errors():
            if self.embedder() is not None and not self._has_vector_index():
                with self.conn.transaction():
                    self._ddl_lock()  # another process may build it or clear the index meanwhile
                    if self.embedder() is not None:
                        self.conn.execute(f"SET LOCAL maintenance_work_mem = '{BUILD_MEMORY}'")
                        self.conn.execute(f"CREATE INDEX IF NOT EXISTS {HNSW_INDEX} ON neuro_chunks "
                                          "USING hnsw (embedding vector_cosine_ops)")
            self.conn.execute("ANALYZE neuro_documents")
            self.conn.execute("ANALYZE neuro_chunks")

    def _has_vector_index(self) -> bool:
        return self._row("SELECT to_regclass(%s)", (HNSW_INDEX,))[0] is not None

    def embedder(self) -> EmbedderInfo | None:
        with self._errors():
            meta: dict[str, str | None] = dict(self.conn.execute(
                "SELECT key, value FROM neuro_meta WHERE key = ANY(%s)", (list(EMBEDDER_META_KEYS),)
            ).fetchall())
        return EmbedderInfo.from_meta(meta)

    def set_embedder(self, info: EmbedderInfo) -> None:
        check_embedder(self.embedder(), info)
        with self._errors(), self.conn.transaction():
            self._ddl_lock()
            current = self.embedder()  # again, under the lock: another indexer may have set one
            check_embedder(current, info)
            if current is not None:
                return
            # The column takes the embedder's dimension so that the HNSW index can be built on it
            # (by optimize(), once the first run has filled the table).
            self.conn.execute(f"DROP INDEX IF EXISTS {HNSW_INDEX}")
            self.conn.execute(f"ALTER TABLE neuro_chunks ALTER COLUMN embedding TYPE vector({int(info.dim)})")
            for key, value in info.meta().items():
                self._set_meta(key, value)

    def documents(self) -> dict[str, DocumentInfo]:
        with self._errors():
            rows = self.conn.execute("SELECT path, sha256, size, mtime_ns, chunks FROM neuro_documents").fetchall()
        return {r[0]: DocumentInfo(*r) for r in rows}

    def replace_document(self, doc: DocumentInfo, chunks: Sequence[ChunkRecord], vectors: np.ndarray) -> None:
        vectors = document_vectors(chunks, vectors, self.embedder(), self._location)
        context = doc.path.rsplit("/", 1)[-1]
        with self._errors(), self.conn.transaction():
            # The upsert locks the document's row: a concurrent writer of the same path waits here.
            doc_id = self._row(
                "INSERT INTO neuro_documents(path, sha256, size, mtime_ns, chunks, indexed_at) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (path) DO UPDATE SET sha256 = EXCLUDED.sha256, "
                "size = EXCLUDED.size, mtime_ns = EXCLUDED.mtime_ns, chunks = EXCLUDED.chunks, "
                "indexed_at = EXCLUDED.indexed_at RETURNING id",
                (doc.path, doc.sha256, doc.size, doc.mtime_ns, len(chunks), time.time()),
            )[0]
            self.conn.execute("DELETE FROM neuro_chunks WHERE doc_id = %s", (doc_id,))
            rows = []
            for c, vector in zip(chunks, vectors):
                ctx = f"{context} {c.heading}".strip()
                rows.append((doc_id, c.ordinal, c.text, c.heading, c.location, ctx, vector,
                             fold_accents(c.text), fold_accents(ctx)))
            with self.conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO neuro_chunks(doc_id, ordinal, text, heading, location, context, embedding, tsv) "
                    f"VALUES (%s, %s, %s, %s, %s, %s, %b, to_tsvector('{TS_CONFIG}', %s) || "
                    f"to_tsvector('{TS_CONFIG}', %s))",
                    rows,
                )

    def touch_document(self, path: str, size: int, mtime_ns: int) -> None:
        with self._errors():
            self.conn.execute("UPDATE neuro_documents SET size = %s, mtime_ns = %s WHERE path = %s",
                              (size, mtime_ns, path))

    def delete_documents(self, paths: Sequence[str]) -> None:
        if not paths:
            return
        with self._errors(), self.conn.transaction():
            # Rows locked in path order, so two deleting runs cannot deadlock.
            self.conn.execute(
                "DELETE FROM neuro_documents WHERE id IN (SELECT id FROM neuro_documents WHERE path = ANY(%s) "
                "ORDER BY path FOR UPDATE)",
                (list(paths),),
            )

    def clear(self) -> None:
        with self._errors(), self.conn.transaction():
            self._ddl_lock()
            self.conn.execute(f"DROP INDEX IF EXISTS {HNSW_INDEX}")
            self.conn.execute("DELETE FROM neuro_chunks")
            self.conn.execute("DELETE FROM neuro_documents")
            self.conn.execute("ALTER TABLE neuro_chunks ALTER COLUMN embedding TYPE vector")
            self.conn.execute("DELETE FROM neuro_meta WHERE key NOT IN ('schema_version', 'created_at')")

    def vector_search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        if k <= 0 or self.embedder() is None:
            return []
        vector = np.asarray(query, dtype=np.float32)
        if not np.any(vector):  # no direction (an embedder's zero vector): pgvector's cosine is NaN
            return []
        with self._errors(), self.conn.transaction():
            self.conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(max(100, 2 * k)),))
            rows = self.conn.execute(
                "SELECT id, 1 - (embedding <=> %b) FROM neuro_chunks ORDER BY embedding <=> %b LIMIT %s",
                (vector, vector, k),
            ).fetchall()
        # A stored zero vector has a NaN distance to everything; it ranks last and scores nothing.
        return [(int(r[0]), float(r[1])) for r in rows if math.isfinite(r[1])]

    def lexical_search(self, query: str, k: int) -> list[tuple[int, float]]:
        terms = query_terms(query)
        if not terms or k <= 0:
            return []
        with self._errors():
            terms = self._selective_terms(terms)
            if not terms:
                return []
            tsquery = " || ".join([f"plainto_tsquery('{TS_CONFIG}', %s)"] * len(terms))
            rows = self.conn.execute(
                f"SELECT c.id, ts_rank(c.tsv, q.q, 1) AS s FROM neuro_chunks c, (SELECT {tsquery} AS q) q "
                "WHERE c.tsv @@ q.q ORDER BY s DESC, c.id LIMIT %s",
                (*terms, k),
            ).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]

    def _selective_terms(self, terms: list[str]) -> list[str]:
        """`lexical.selective_terms` with chunk counts of the common terms from the planner's
        statistics of the tsvector column, and a GIN lookup for whether each other term occurs."""
        row = self._row(
            "SELECT c.reltuples, s.most_common_elems::text::text[], s.most_common_elem_freqs "
            "FROM pg_class c LEFT JOIN pg_stats s ON s.schemaname = current_schema() "
            "AND s.tablename = 'neuro_chunks' AND s.attname = 'tsv' "
            "WHERE c.oid = 'neuro_chunks'::regclass"
        )
        total = max(0, int(row[0] or 0))
        if not total:  # never analyzed: no shares to go by
            return terms
        elems = row[1] or []
        common = dict(zip(elems, row[2] or []))
        # A term not in the statistics is rarer than every term in them.
        rare_share = min(common.values()) if common else 0.0
        df: dict[str, int] = {}
        rare = []
        for term in terms:
            if term in common:
                df[term] = max(1, round(common[term] * total))
            else:
                rare.append(term)
        if rare:
            found = self.conn.execute(
                "SELECT t FROM unnest(%s::text[]) AS t WHERE EXISTS (SELECT 1 FROM neuro_chunks "
                f"WHERE tsv @@ plainto_tsquery('{TS_CONFIG}', t))",
                (rare,),
            ).fetchall()
            df.update({r[0]: max(1, round(rare_share * total)) for r in found})
        return _affordable(selective_terms(terms, df, total), df)

    def get_chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        if not ids:
            return {}
        with self._errors():
            rows = self.conn.execute(
                "SELECT c.id, d.path, c.ordinal, c.text, c.heading, c.location FROM neuro_chunks c "
                "JOIN neuro_documents d ON d.id = c.doc_id WHERE c.id = ANY(%s)",
                ([int(i) for i in ids],),
            ).fetchall()
        return {r[0]: StoredChunk(*r) for r in rows}

    def iter_chunk_texts(self) -> Iterator[str]:
        with self._errors():
            rows = self.conn.execute("SELECT text FROM neuro_chunks ORDER BY id").fetchall()
        for (text,) in rows:
            yield text

    def stats(self) -> dict:
        with self._errors():
            docs = self._row(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), MAX(indexed_at) FROM neuro_documents"
            )
            chunks = self._row("SELECT COUNT(*) FROM neuro_chunks")[0]
            size = self._row(
                "SELECT pg_total_relation_size('neuro_meta') + pg_total_relation_size('neuro_documents') + "
                "pg_total_relation_size('neuro_chunks')"
            )[0]
            server = self._row(
                "SELECT current_setting('server_version'), "
                "(SELECT extversion FROM pg_extension WHERE extname = 'vector')"
            )
        info = self.embedder()
        with self._errors():
            has_index = self._has_vector_index()
        return {
            "storage": self._location,
            "database": f"PostgreSQL {server[0]}, pgvector {server[1]}",
            "schema_version": SCHEMA_VERSION,
            "documents": docs[0],
            "source_bytes": int(docs[1]),
            "chunks": chunks,
            "size_bytes": int(size),
            **embedder_stats(info),
            "last_indexed_at": docs[2],
            "vector_index": "hnsw" if has_index else "none yet (exact scan; built at the end of `neuro index`)",
        }

    def check(self) -> list[str]:
        problems = []
        with self._errors():
            bad = self.conn.execute(
                "SELECT d.path FROM neuro_documents d LEFT JOIN neuro_chunks c ON c.doc_id = d.id "
                "GROUP BY d.id HAVING COUNT(c.id) != d.chunks"
            ).fetchall()
            problems += [f"chunk count mismatch: {r[0]}" for r in bad]
            orphans = self._row(
                "SELECT COUNT(*) FROM neuro_chunks WHERE doc_id NOT IN (SELECT id FROM neuro_documents)"
            )[0]
            if orphans:
                problems.append(f"{orphans} orphan chunks")
            info = self.embedder()
            if info is not None:
                wrong = self._row(
                    "SELECT COUNT(*) FROM neuro_chunks WHERE vector_dims(embedding) != %s", (info.dim,)
                )[0]
                if wrong:
                    problems.append(f"{wrong} vectors of the wrong size")
            elif self._row("SELECT EXISTS (SELECT 1 FROM neuro_chunks)")[0]:
                problems.append("chunks stored but no embedder recorded")
        return problems

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass

    def __enter__(self) -> "PostgresStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
