"""`neuro index`, `neuro search`, `neuro stats` as a user runs them (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def neuro(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "neuro_bitnet.cli.main", *args], capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.mark.slow
def test_index_search_stats_roundtrip(tmp_path: Path, tiny_embedder_dir: Path, storage_spec) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "pets.md").write_text("# Pets\n\nThe dog barks loud at night.\n")
    (docs / "sub" / "geo.txt").write_text("Paris is the capital of France.\n")
    (docs / "blob.bin").write_bytes(b"\x00" * 64)
    (docs / "sub" / "huge.txt").write_text("x" * 3000)
    storage = storage_spec

    first = neuro("index", str(docs), "--recursive", "--storage", str(storage), "--embedder", str(tiny_embedder_dir),
                  "--max-file-size", "2KB")
    assert first.returncode == 0, first.stderr
    assert "Indexed 2 file(s)" in first.stdout and "2 skipped" in first.stdout
    assert "1 binary file" in first.stdout and "1 too large" in first.stdout

    again = neuro("index", str(docs), "-r", "--storage", str(storage), "--max-file-size", "2KB", "--json")
    summary = json.loads(again.stdout)
    assert summary["indexed"] == 0 and summary["unchanged"] == 2 and summary["embedder"] == str(tiny_embedder_dir)

    found = neuro("search", "perro ladra", "--storage", str(storage), "--top-k", "1", "--json")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert len(hits) == 1 and hits[0]["path"].endswith("pets.md")
    assert {"path", "score", "text", "location"} <= set(hits[0])

    text = neuro("search", "capital of France", "--storage", str(storage))
    assert "geo.txt (line 1)" in text.stdout and "score" in text.stdout

    stats = neuro("stats", "--storage", str(storage), "--json")
    data = json.loads(stats.stdout)
    assert data["documents"] == 2 and data["chunks"] == 2 and data["embedder_dim"] == 16
    assert "documents:" in neuro("stats", "--storage", str(storage)).stdout


@pytest.mark.slow
def test_embedder_mismatch_and_reindex(tmp_path: Path, tiny_embedder_dir: Path, other_embedder_dir: Path,
                                       storage_spec) -> None:
    (tmp_path / "a.md").write_text("dog")
    storage = str(storage_spec)
    indexed = neuro("index", str(tmp_path / "a.md"), "--storage", storage, "--embedder", str(tiny_embedder_dir))
    assert indexed.returncode == 0
    mixed = neuro("index", str(tmp_path / "a.md"), "--storage", storage, "--embedder", str(other_embedder_dir))
    assert mixed.returncode == 6
    assert "cannot mix" in mixed.stderr and "--reindex" in mixed.stderr and "Traceback" not in mixed.stderr
    rebuilt = neuro("index", str(tmp_path / "a.md"), "--storage", storage, "--embedder", str(other_embedder_dir),
                    "--reindex")
    assert rebuilt.returncode == 0 and "Indexed 1 file(s)" in rebuilt.stdout


def test_clear_errors_for_missing_and_corrupt_storage(tmp_path: Path) -> None:
    missing = neuro("search", "x", "--storage", str(tmp_path / "nope"))
    assert missing.returncode == 6 and "no index in" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "index.sqlite3").write_bytes(b"garbage" * 1000)
    corrupt = neuro("stats", "--storage", str(tmp_path / "bad"))
    assert corrupt.returncode == 6 and "corrupt" in corrupt.stderr and "Traceback" not in corrupt.stderr


@pytest.mark.slow
def test_unknown_embedder_and_bad_size(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("dog")
    unknown = neuro("index", str(tmp_path / "a.md"), "--storage", str(tmp_path / "i"), "--embedder", "no-such-model")
    assert unknown.returncode == 7 and "unknown embedder" in unknown.stderr
    bad = neuro("index", str(tmp_path / "a.md"), "--storage", str(tmp_path / "i"), "--max-file-size", "lots")
    assert bad.returncode == 2 and "max-file-size" in bad.stderr


def test_index_an_odd_tree(tmp_path: Path, tiny_embedder_dir: Path) -> None:
    """A non-UTF-8 name, a FIFO (also named on the command line) and a symlink back to the root:
    the run ends, warns about each on one line, and keeps every other file."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("The dog barks.")
    (docs / "b.md").write_text("The cat meows.")
    with open(os.fsencode(docs) + b"/caf\xe9.md", "wb") as fh:
        fh.write(b"latin-1 name")
    os.mkfifo(docs / "pipe.txt")
    os.symlink(docs, docs / "loop")
    result = neuro("index", str(docs), str(docs / "pipe.txt"), "-r", "--storage", str(tmp_path / "idx"),
                   "--embedder", str(tiny_embedder_dir))
    assert result.returncode == 0, result.stderr
    assert "Indexed 2 file(s)" in result.stdout
    assert f"{docs}/caf\\xe9.md: name is not valid UTF-8" in result.stdout
    assert f"{docs}/pipe.txt: not a regular file" in result.stdout
    assert f"{docs}/loop: symlink loop" in result.stdout


def test_postgres_url_from_the_environment(tmp_path: Path, tiny_embedder_dir: Path, pg_server) -> None:
    """NEURO_BITNET_STORAGE may name a database: index, search and stats use it without --storage,
    and the password of the URL is not printed."""
    url = pg_server.new_database()
    secret = url.replace("postgres:@", "postgres:hunter2@")  # the test server trusts local users
    env = {"NEURO_BITNET_STORAGE": secret}
    (tmp_path / "pets.md").write_text("# Pets\n\nThe dog barks loud at night.\n")
    indexed = neuro("index", str(tmp_path / "pets.md"), "--embedder", str(tiny_embedder_dir), env_extra=env)
    assert indexed.returncode == 0, indexed.stderr
    assert "Index postgresql://postgres:***@" in indexed.stdout and "hunter2" not in indexed.stdout
    found = neuro("search", "dog barks", "--json", env_extra=env)
    assert found.returncode == 0 and json.loads(found.stdout)[0]["path"].endswith("pets.md"), found.stderr
    stats = json.loads(neuro("stats", "--json", env_extra=env).stdout)
    assert stats["documents"] == 1 and stats["database"].startswith("PostgreSQL ")
    assert "hunter2" not in stats["storage"]


def test_postgres_errors_are_one_line(tmp_path: Path, pg_server) -> None:
    empty = neuro("search", "x", "--storage", pg_server.new_database())
    assert empty.returncode == 6 and "no index in postgresql://" in empty.stderr and "Traceback" not in empty.stderr
    down = neuro("stats", "--storage", f"postgresql://nobody@/neuro?host={tmp_path}")
    assert down.returncode == 6 and "cannot connect to postgresql://nobody@/neuro" in down.stderr
    assert "Traceback" not in down.stderr and len(down.stderr.strip().splitlines()) == 1
