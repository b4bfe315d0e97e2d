"""`neuro index`: build or update a local document index."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from neuro_bitnet.cli.console import err_console, format_size, print_json
from neuro_bitnet.errors import ConfigError
from neuro_bitnet.retrieval.loaders import DEFAULT_MAX_FILE_BYTES
from neuro_bitnet.retrieval.paths import resolve_storage

SHOWN_SKIPS = 10
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3}


def parse_size(text: str) -> int:
    """'20MB', '512k', '1000' -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"--max-file-size: cannot read {text!r} (use e.g. 20MB, 512KB, 1000000)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


class _Bar:
    """A rich progress bar with files and chunks on a terminal; nothing otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.progress = None
        if enabled and sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(TextColumn("[bold]indexing"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("files, {task.fields[chunks]} chunks"), TimeElapsedColumn(),
                                     TextColumn("ETA"), TimeRemainingColumn(), console=err_console(),
                                     transient=True)
            self.task = self.progress.add_task("index", total=None, chunks=0)
            self.progress.start()

    def __call__(self, event) -> None:
        if self.progress is not None:
            self.progress.update(self.task, total=event.files_total, completed=event.files_done,
                                 chunks=event.chunks_done)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def interrupted_message(report) -> str:
    """What Ctrl-C during indexing kept, and how to go on (an `IndexReport` so far)."""
    return (f"Interrupted: {report.indexed} document(s) indexed in this run were kept "
            f"({report.documents_total} in the index); run the same command again to resume "
            "(finished files are not redone).")


def print_summary(report, storage: str, verbose: bool) -> None:
    """The end-of-run summary (an `IndexReport`) on stdout."""
    click.echo(
        f"Indexed {report.indexed} file(s), {report.chunks_added} chunk(s) added; "
        f"{report.unchanged} unchanged, {report.removed} removed, {len(report.skipped)} skipped "
        f"({report.seconds:.1f} s)."
    )
    click.echo(f"Index {storage}: {report.documents_total} document(s), {report.chunks_total} chunk(s).")
    if report.skipped:
        counts = ", ".join(f"{n} {reason}" for reason, n in report.skip_counts().most_common())
        click.echo(f"Skipped: {counts}")
        shown = report.skipped if verbose else report.skipped[:SHOWN_SKIPS]
        for item in shown:
            click.echo(f"  {item.path}: {item.reason}")
        if len(shown) < len(report.skipped):
            click.echo(f"  ... {len(report.skipped) - len(shown)} more (--verbose lists all)")
    if report.filtered:
        quiet = ", ".join(f"{n} {reason}" for reason, n in report.filtered.most_common())
        click.echo(f"Not considered: {quiet}")


@click.command("index")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-r", "--recursive", is_flag=True, help="Descend into folders.")
@click.option("--include", multiple=True, metavar="GLOB", help="Only files matching (gitignore-style), repeatable.")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Leave out files/folders matching, repeatable.")
@click.option("--storage", default=None, metavar="DIR|URL",
              help="Index folder, or a postgresql:// URL [default: $NEURO_BITNET_STORAGE or the user data dir].")
@click.option("--embedder", default=None, metavar="NAME|DIR",
              help="Embedding model: multilingual-e5-small (default), all-minilm-l6-v2, or an ONNX folder.")
@click.option("--reindex", is_flag=True, help="Drop the index and rebuild it (needed to change embedder).")
@click.option("--max-file-size", default=f"{DEFAULT_MAX_FILE_BYTES // 1024**2}MB", show_default=True,
              help="Skip larger files.")
@click.option("--chunk-tokens", default=256, show_default=True, type=click.IntRange(16, 8192), help="Chunk size.")
@click.option("--overlap", default=32, show_default=True, type=click.IntRange(0, 4096),
              help="Tokens shared by neighbouring chunks.")
@click.option("--hidden", is_flag=True, help="Also index hidden files and folders.")
@click.option("--no-gitignore", is_flag=True, help="Do not honour .gitignore files.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="List every skipped file.")
def command(paths, recursive, include, exclude, storage, embedder, reindex, max_file_size, chunk_tokens,
            overlap, hidden, no_gitignore, as_json, verbose) -> None:
    """Index documents (Markdown, text, reST, HTML, PDF, DOCX, code) for `neuro search` and
    `neuro ask --storage`. Re-running only indexes what changed and forgets deleted files."""
    from neuro_bitnet.retrieval.embedders.registry import load_embedder
    from neuro_bitnet.retrieval.indexer import IndexInterrupted, IndexOptions, index_paths
    from neuro_bitnet.retrieval.store import open_store

    missing = [p for p in paths if not (p.exists() or p.is_symlink())]
    if missing:  # checked before anything is created
        raise click.BadParameter(f"no such file or directory: {', '.join(map(str, missing))}", param_hint="PATHS")
    spec = resolve_storage(storage)
    options = IndexOptions(recursive=recursive, include=list(include), exclude=list(exclude), hidden=hidden,
                           gitignore=not no_gitignore, max_file_bytes=parse_size(max_file_size),
                           chunk_tokens=chunk_tokens, overlap=min(overlap, chunk_tokens // 2), reindex=reindex)
    with open_store(spec, create=True) as store, store.writer_lock():
        recorded = None if reindex else store.embedder()
        emb = load_embedder(embedder or (recorded.name if recorded else None))
        bar = _Bar(enabled=not as_json)
        try:
            report = index_paths(list(paths), store, emb, options, progress=bar)
        except IndexInterrupted as stop:
            bar.close()
            click.echo(interrupted_message(stop.report), err=True)
            raise SystemExit(130) from None
        finally:
            bar.close()
        if as_json:
            data = report.to_dict()
            data.update(storage=store.location, embedder=emb.name)
            print_json(data)
        else:
            print_summary(report, store.location, verbose)
            size = store.stats()["size_bytes"]
            click.echo(f"Embedder {emb.name} ({emb.dim} dims); database {format_size(size)}.")
