"""Incremental indexing, skip reporting, and consistency after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from neuro_bitnet.retrieval.embedders import OnnxEmbedder
from neuro_bitnet.retrieval.errors import EmbedderMismatchError, StorageError
from neuro_bitnet.retrieval.indexer import IndexOptions, index_paths
from neuro_bitnet.retrieval.store import open_store

from support.pauses import Pauses

N_FILES = 60  # the kill -9 test's documents (the indexer is held after the first)


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


def test_incremental_changes_and_deletions(tmp_path: Path, tiny_embedder, storage_spec) -> None:
    docs = tmp_path / "docs"
    write(docs, {"a.md": "# Dogs\n\nThe dog barks.", "b.txt": "The cat meows.", "sub/c.py": "print('code')"})
    events = []
    with open_store(storage_spec, create=True) as store:
        first = index_paths([docs], store, tiny_embedder, IndexOptions(recursive=True), progress=events.append)
        assert (first.indexed, first.unchanged, first.removed, first.documents_total) == (3, 0, 0, 3)
        assert events[-1].files_done == events[-1].files_total == 3 and events[-1].chunks_done == first.chunks_added

        again = index_paths([docs], store, tiny_embedder, IndexOptions(recursive=True))
        assert (again.indexed, again.unchanged, again.chunks_added) == (0, 3, 0)

        os.utime(docs / "b.txt", ns=(1, 1))  # touched, same content: hash says unchanged
        (docs / "a.md").write_text("# Dogs\n\nThe puppy barks loudly.")
        (docs / "sub" / "c.py").unlink()
        write(docs, {"d.md": "River water flows."})
        third = index_paths([docs], store, tiny_embedder, IndexOptions(recursive=True))
        assert (third.indexed, third.unchanged, third.removed) == (2, 1, 1)
        assert set(store.documents()) == {str(docs / "a.md"), str(docs / "b.txt"), str(docs / "d.md")}
        assert any("puppy" in t for t in store.iter_chunk_texts())
        assert not any("code" in t for t in store.iter_chunk_texts())
        assert store.check() == []


def test_documents_outside_this_run_are_kept(tmp_path: Path, tiny_embedder, storage_spec) -> None:
    write(tmp_path, {"one/a.md": "dog", "two/b.md": "cat"})
    with open_store(storage_spec, create=True) as store:
        index_paths([tmp_path / "one"], store, tiny_embedder)
        report = index_paths([tmp_path / "two"], store, tiny_embedder)
        assert report.removed == 0 and report.documents_total == 2


def test_skips_are_counted_with_reasons(tmp_path: Path, tiny_embedder, storage_spec) -> None:
    docs = tmp_path / "docs"
    write(docs, {"ok.md": "dog", "big.txt": "x " * 5000, "bin.dat": b"\x00\x01" * 100,
                 "latin.txt": "olé".encode("latin-1"), "pic.png": b"\x89PNG"})
    with open_store(storage_spec, create=True) as store:
        report = index_paths([docs], store, tiny_embedder, IndexOptions(max_file_bytes=2000))
    assert report.indexed == 1
    assert dict(report.skip_counts()) == {"too large": 1, "binary file": 2, "not UTF-8 text": 1}


def test_reindex_switches_embedder(tmp_path: Path, tiny_embedder, other_embedder_dir, storage_spec) -> None:
    write(tmp_path, {"d/a.md": "dog"})
    other = OnnxEmbedder(other_embedder_dir)
    with open_store(storage_spec, create=True) as store:
        index_paths([tmp_path / "d"], store, tiny_embedder)
        with pytest.raises(EmbedderMismatchError):
            index_paths([tmp_path / "d"], store, other)
        report = index_paths([tmp_path / "d"], store, other, IndexOptions(reindex=True))
        assert report.indexed == 1 and store.embedder().fingerprint == other.fingerprint


def test_chunking_change_rechunks(tmp_path: Path, tiny_embedder, storage_spec) -> None:
    write(tmp_path, {"d/a.md": "dog " * 300})
    with open_store(storage_spec, create=True) as store:
        first = index_paths([tmp_path / "d"], store, tiny_embedder, IndexOptions(chunk_tokens=100, overlap=0))
        second = index_paths([tmp_path / "d"], store, tiny_embedder, IndexOptions(chunk_tokens=50, overlap=0))
        assert second.indexed == 1 and second.chunks_total > first.chunks_total


@pytest.mark.slow
def test_kill_9_leaves_a_consistent_index_that_the_next_run_completes(tmp_path: Path, tiny_embedder_dir,
                                                                      storage_spec) -> None:
    docs = tmp_path / "docs"
    paragraph = "The dog barks at the moon while the river flows to the sea. " * 12
    write(docs, {f"f{i:04d}.md": f"# Note {i}\n\n{paragraph}\n\n{paragraph}\n" for i in range(N_FILES)})
    storage = storage_spec
    cmd = [sys.executable, "-m", "neuro_bitnet.cli.main", "index", str(docs), "--storage", str(storage),
           "--embedder", str(tiny_embedder_dir), "--chunk-tokens", "32", "--overlap", "4"]
    pauses = Pauses(tmp_path / "pauses")
    with pauses.hold("index"):  # the indexer holds after its first stored document: killed half-way
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ, **pauses.env()})
        try:
            pauses.wait_reached("index", alive=lambda: proc.poll() is None)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, "indexing finished before it could be killed"
    with open_store(storage) as store:
        assert store.check() == []
        partial = len(store.documents())
    assert 0 < partial < N_FILES
    done = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with open_store(storage) as store:
        assert store.check() == []
        assert len(store.documents()) == N_FILES
    assert f'"unchanged": {partial}' in done.stdout


def long_paragraph(n_words: int) -> str:
    """One paragraph (no blank line) of `n_words` distinct words, the last one `finalword`."""
    return " ".join(f"w{i}" for i in range(n_words - 1)) + " finalword"


def test_a_paragraph_longer_than_the_embedder_limit_keeps_every_word(tmp_path: Path, tiny_embedder,
                                                                     storage_spec) -> None:
    """The tiny embedder truncates its model input at 128 tokens; chunking must still see all
    1,000 words of a paragraph."""
    from neuro_bitnet.retrieval.search import hybrid_search

    assert tiny_embedder.max_tokens == 128
    write(tmp_path / "docs", {"long.txt": long_paragraph(1000)})
    with open_store(storage_spec, create=True) as store:
        index_paths([tmp_path / "docs"], store, tiny_embedder, IndexOptions(chunk_tokens=100, overlap=10))
        words = set(" ".join(store.iter_chunk_texts()).split())
        assert words == {f"w{i}" for i in range(999)} | {"finalword"}
        hits = hybrid_search(store, tiny_embedder, "finalword", mode="lexical")
        assert len(hits) == 1 and hits[0].text.endswith("finalword")


def test_ctrl_c_keeps_finished_documents_and_the_next_run_resumes(tmp_path: Path, tiny_embedder,
                                                                  storage_spec) -> None:
    from neuro_bitnet.retrieval.indexer import IndexInterrupted

    write(tmp_path / "docs", {f"f{i:02d}.md": f"The dog {i} barks." for i in range(20)})
    options = IndexOptions(batch_chunks=1)  # commit after every document

    def stop_after_five(event) -> None:
        if event.files_done == 5:
            raise KeyboardInterrupt

    with open_store(storage_spec, create=True) as store:
        with pytest.raises(IndexInterrupted) as stopped:
            index_paths([tmp_path / "docs"], store, tiny_embedder, options, progress=stop_after_five)
        assert isinstance(stopped.value, KeyboardInterrupt)
        assert stopped.value.report.indexed == 5 and stopped.value.report.documents_total == 5
        assert store.check() == [] and len(store.documents()) == 5
        resumed = index_paths([tmp_path / "docs"], store, tiny_embedder, options)
        assert (resumed.unchanged, resumed.indexed, resumed.documents_total) == (5, 15, 20)


def test_cli_ctrl_c_says_what_was_kept_and_how_to_resume(tmp_path: Path, tiny_embedder_dir, monkeypatch,
                                                         storage_spec) -> None:
    """The real `neuro index` command; Ctrl-C arrives (deterministically) at the 3rd progress event."""
    from click.testing import CliRunner

    from neuro_bitnet.cli import index_cmd

    write(tmp_path / "docs", {f"f{i:02d}.md": f"The cat {i} meows." for i in range(10)})
    calls = []

    def interrupting_bar(self, event) -> None:
        calls.append(event)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(index_cmd._Bar, "__call__", interrupting_bar)
    args = [str(tmp_path / "docs"), "--storage", str(storage_spec), "--embedder", str(tiny_embedder_dir)]
    result = CliRunner().invoke(index_cmd.command, args)
    assert result.exit_code == 130
    kept = calls[-1].files_done
    assert f"Interrupted: {kept} document(s) indexed in this run were kept ({kept} in the index)" in result.output
    assert "run the same command again to resume" in result.output
    monkeypatch.undo()
    again = CliRunner().invoke(index_cmd.command, [*args, "--json"])
    assert again.exit_code == 0 and f'"unchanged": {kept}' in again.output


def test_a_second_indexer_is_refused_while_one_runs(tmp_path: Path, tiny_embedder_dir, storage_spec) -> None:
    """`neuro index` holds the store's writer lock for its run (a file lock on SQLite, an advisory
    lock on PostgreSQL): another run on the same store stops at once with a one-line error, and
    runs again once the lock is free."""
    write(tmp_path / "docs", {"a.md": "The dog barks."})
    cmd = [sys.executable, "-m", "neuro_bitnet.cli.main", "index", str(tmp_path / "docs"), "--storage",
           str(storage_spec), "--embedder", str(tiny_embedder_dir)]
    with open_store(storage_spec, create=True) as holder, holder.writer_lock():
        refused = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 6, refused.stderr
        assert "another `neuro index` is updating" in refused.stderr and "Traceback" not in refused.stderr
        with pytest.raises(StorageError, match="another `neuro index`"):
            with open_store(storage_spec) as other, other.writer_lock():
                pass
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Indexed 1 file(s)" in done.stdout, done.stderr
