"""File discovery: recursion, globs, hidden folders, .gitignore and symlink loops."""

from __future__ import annotations

import os
from pathlib import Path

from neuro_bitnet.retrieval.files import discover


def tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def names(found, root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in found.files}


def test_recursive_hidden_and_gitignore(tmp_path: Path) -> None:
    tree(tmp_path, {
        "a.md": "a", "sub/b.txt": "b", "sub/deep/c.py": "c", ".hidden/d.md": "d", "sub/.e.md": "e",
        "build/out.txt": "o", "notes.log": "l", ".gitignore": "build/\n*.log\n", "sub/.gitignore": "deep/\n",
    })
    (tmp_path / ".git").mkdir()
    found = discover([tmp_path], recursive=True)
    assert names(found, tmp_path) == {"a.md", "sub/b.txt"}
    assert found.filtered["gitignored"] == 3 and found.filtered["hidden"] >= 3
    flat = discover([tmp_path])
    assert names(flat, tmp_path) == {"a.md"}
    everything = discover([tmp_path], recursive=True, hidden=True, gitignore=False)
    assert {"build/out.txt", "notes.log", "sub/deep/c.py", ".hidden/d.md", ".gitignore"} <= names(everything, tmp_path)


def test_gitignore_of_enclosing_repo_applies_to_subfolder(tmp_path: Path) -> None:
    tree(tmp_path, {".gitignore": "*.tmp\n", "docs/a.md": "a", "docs/b.tmp": "b"})
    (tmp_path / ".git").mkdir()
    found = discover([tmp_path / "docs"], recursive=True)
    assert names(found, tmp_path / "docs") == {"a.md"}


def test_include_exclude_globs(tmp_path: Path) -> None:
    tree(tmp_path, {"a.md": "", "b.txt": "", "docs/c.md": "", "docs/drafts/d.md": ""})
    found = discover([tmp_path], recursive=True, include=["*.md"], exclude=["drafts/"])
    assert names(found, tmp_path) == {"a.md", "docs/c.md"}


def test_explicit_files_missing_paths_and_duplicates(tmp_path: Path) -> None:
    tree(tmp_path, {"a.md": "a"})
    found = discover([tmp_path / "a.md", tmp_path / "a.md", tmp_path / "missing.md", tmp_path], recursive=True)
    assert len(found.files) == 1
    assert [s.reason for s in found.skipped] == ["does not exist"]


def test_symlink_loops_and_broken_links_are_reported(tmp_path: Path) -> None:
    tree(tmp_path, {"a/x.md": "x"})
    os.symlink(tmp_path / "a", tmp_path / "a" / "again")  # a/again -> a
    os.symlink(tmp_path / "nowhere", tmp_path / "a" / "dangling.md")
    os.symlink(tmp_path / "a" / "self", tmp_path / "a" / "self")  # self-loop
    found = discover([tmp_path], recursive=True)
    assert names(found, tmp_path) == {"a/x.md"}
    reasons = sorted(s.reason for s in found.skipped)
    assert reasons == ["broken symlink", "symlink loop", "symlink loop"]
