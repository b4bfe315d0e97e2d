"""Incremental indexing: discover files, skip unchanged ones (content hash), chunk, embed, store,
and forget files that were deleted."""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from neuro_bitnet.config import pause_point
from neuro_bitnet.retrieval.chunker import Chunk, chunk_sections
from neuro_bitnet.retrieval.embedders.base import Embedder
from neuro_bitnet.retrieval.files import Skipped, discover
from neuro_bitnet.retrieval.loaders import DEFAULT_MAX_FILE_BYTES, SkipFile, file_kind, parse_bytes, read_bytes
from neuro_bitnet.retrieval.store import ChunkRecord, DocumentInfo, EmbedderInfo, Store


@dataclass
class IndexOptions:
    """How to walk and chunk."""

    recursive: bool = False
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    hidden: bool = False
    gitignore: bool = True
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    chunk_tokens: int = 256
    overlap: int = 32
    reindex: bool = False
    batch_chunks: int = 16  # embedded and committed together; small, so progress moves every few seconds


@dataclass
class IndexReport:
    """What an indexing run did."""

    files_found: int = 0
    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks_added: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    filtered: Counter = field(default_factory=Counter)
    documents_total: int = 0
    chunks_total: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0
    embed_seconds: float = 0.0
    store_seconds: float = 0.0

    def skip_counts(self) -> Counter:
        """Skipped files by reason (reasons with details collapsed to their first words)."""
        return Counter(s.reason.split(" (")[0] for s in self.skipped)

    def to_dict(self) -> dict:
        """JSON-ready summary."""
        return {
            "files_found": self.files_found, "indexed": self.indexed, "unchanged": self.unchanged,
            "removed": self.removed, "chunks_added": self.chunks_added,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "filtered": dict(self.filtered), "documents_total": self.documents_total,
            "chunks_total": self.chunks_total, "seconds": round(self.seconds, 3),
        }


@dataclass
class ProgressEvent:
    """Sent after each file: how far the run is."""

    files_done: int
    files_total: int
    chunks_done: int
    path: str


ProgressCallback = Callable[[ProgressEvent], None]


class IndexInterrupted(KeyboardInterrupt):
    """Ctrl-C during `index_paths`: what was committed so far is kept; `report` says how much."""

    def __init__(self, report: IndexReport) -> None:
        super().__init__()
        self.report = report


@dataclass
class _Pending:
    doc: DocumentInfo
    chunks: list[Chunk]


def embedding_text(path: str, chunk: Chunk) -> str:
    """The text embedded for a chunk: file name and heading path give it context."""
    title = Path(path).name + (f" > {chunk.heading}" if chunk.heading else "")
    return f"{title}\n\n{chunk.text}"


def index_paths(paths: list[Path], store: Store, embedder: Embedder, options: IndexOptions | None = None,
                progress: ProgressCallback | None = None) -> IndexReport:
    """Bring the index up to date with `paths`; see the module docstring.

    Each document is committed as soon as its chunks are embedded (in batches of about
    `options.batch_chunks` chunks), so memory stays bounded and Ctrl-C keeps every finished
    document: it raises `IndexInterrupted` with the report so far, and a new run resumes.
    """
    options = options or IndexOptions()
    started = time.perf_counter()
    report = IndexReport()
    try:
        _index(paths, store, embedder, options, progress, report)
    except KeyboardInterrupt:
        report.seconds = time.perf_counter() - started
        try:
            report.documents_total = store.stats()["documents"]
        except Exception:  # the count is a courtesy; the interrupt is what matters
            report.documents_total = report.indexed + report.unchanged
        raise IndexInterrupted(report) from None
    report.seconds = time.perf_counter() - started
    return report


def _index(paths: list[Path], store: Store, embedder: Embedder, options: IndexOptions,
           progress: ProgressCallback | None, report: IndexReport) -> None:
    if options.reindex:
        store.clear()
    store.set_embedder(EmbedderInfo(embedder.name, embedder.fingerprint, embedder.dim))
    chunking = f"{embedder.fingerprint}:{options.chunk_tokens}:{options.overlap}"
    rechunk = store.get_meta("chunking") != chunking

    found = discover(paths, recursive=options.recursive, include=options.include, exclude=options.exclude,
                     hidden=options.hidden, gitignore=options.gitignore)
    report.skipped.extend(found.skipped)
    report.filtered.update(found.filtered)
    report.files_found = len(found.files)
    existing = store.documents()
    if not existing:
        store.set_meta("chunking", chunking)  # so a killed first run resumes without re-chunking
    pending: list[_Pending] = []
    done = 0

    def flush() -> None:
        nonlocal done
        if not pending:
            return
        texts = [embedding_text(p.doc.path, c) for p in pending for c in p.chunks]
        t0 = time.perf_counter()
        vectors = embedder.embed_documents(texts) if texts else None
        t1 = time.perf_counter()
        offset = 0
        for item in pending:
            n = len(item.chunks)
            records = [ChunkRecord(c.ordinal, c.text, c.heading, c.location) for c in item.chunks]
            store.replace_document(item.doc, records, vectors[offset : offset + n])
            offset += n
            report.indexed += 1
            report.chunks_added += n
            done += 1
            pause_point("index")  # test-only hold after each stored document (config.py)
            if progress:
                progress(ProgressEvent(done, len(found.files), report.chunks_added, item.doc.path))
        report.embed_seconds += t1 - t0
        report.store_seconds += time.perf_counter() - t1
        pending.clear()

    def finish_file(path: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(ProgressEvent(done, len(found.files), report.chunks_added, path))

    for path in found.files:
        key = str(path)
        t0 = time.perf_counter()
        try:
            if file_kind(path) == "binary":
                raise SkipFile("binary file")
            st = path.stat()
            old = existing.get(key)
            if old and not rechunk and old.size == st.st_size and old.mtime_ns == st.st_mtime_ns:
                report.unchanged += 1
                finish_file(key)
                continue
            data = read_bytes(path, options.max_file_bytes)
            sha = hashlib.sha256(data).hexdigest()
            if old and not rechunk and old.sha256 == sha:
                store.touch_document(key, st.st_size, st.st_mtime_ns)
                report.unchanged += 1
                finish_file(key)
                continue
            sections = parse_bytes(path, data)
            chunks = chunk_sections(sections, embedder.token_spans, options.chunk_tokens, options.overlap)
            if not chunks:
                raise SkipFile("no text")
        except SkipFile as skip:
            report.skipped.append(Skipped(key, skip.reason))
            finish_file(key)
            continue
        except OSError as exc:
            report.skipped.append(Skipped(key, f"unreadable ({exc.strerror or exc})"))
            finish_file(key)
            continue
        finally:
            report.load_seconds += time.perf_counter() - t0
        pending.append(_Pending(DocumentInfo(key, sha, st.st_size, st.st_mtime_ns, len(chunks)), chunks))
        if sum(len(p.chunks) for p in pending) >= options.batch_chunks:
            flush()
    flush()

    gone = [p for p in existing if _under(p, found.roots, paths) and not os.path.lexists(p)]
    store.delete_documents(gone)
    report.removed = len(gone)
    store.set_meta("chunking", chunking)
    store.optimize()
    stats = store.stats()
    report.documents_total, report.chunks_total = stats["documents"], stats["chunks"]


def _under(doc_path: str, roots: list[Path], given: list[Path]) -> bool:
    """Whether a stored document belongs to the paths of this run (so it may be forgotten)."""
    for root in roots:
        if doc_path.startswith(str(root).rstrip(os.sep) + os.sep):
            return True
    return any(doc_path == os.path.abspath(os.path.expanduser(str(p))) for p in given)
