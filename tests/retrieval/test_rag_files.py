"""File discovery: recursion, globs, hidden folders, .gitignore and symlink loops."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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


def test_non_utf8_names_are_skipped_and_the_rest_kept(tmp_path: Path) -> None:
    tree(tmp_path, {"good.md": "g", "sub/also.md": "a"})
    with open(os.fsencode(tmp_path) + b"/caf\xe9.md", "wb") as fh:  # Latin-1 name
        fh.write(b"bad name")
    os.mkdir(os.fsencode(tmp_path) + b"/dir\xff")
    found = discover([tmp_path], recursive=True)
    assert names(found, tmp_path) == {"good.md", "sub/also.md"}
    skipped = sorted((s.path, s.reason) for s in found.skipped)
    assert skipped == [(f"{tmp_path}/caf\\xe9.md", "name is not valid UTF-8"),
                       (f"{tmp_path}/dir\\xff", "name is not valid UTF-8")]
    explicit = discover([Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.md"))])
    assert explicit.files == [] and explicit.skipped[0].reason == "name is not valid UTF-8"


def test_fifos_and_other_special_files_are_skipped(tmp_path: Path) -> None:
    tree(tmp_path, {"a.md": "a"})
    os.mkfifo(tmp_path / "pipe.txt")
    found = discover([tmp_path], recursive=True)
    assert names(found, tmp_path) == {"a.md"} and found.filtered["not a regular file"] == 1
    explicit = discover([tmp_path / "pipe.txt", Path("/dev/null")])
    assert explicit.files == [] and [s.reason for s in explicit.skipped] == ["not a regular file"] * 2


def test_reading_a_fifo_never_blocks(tmp_path: Path) -> None:
    """Discovery and reading are apart; a file replaced by a FIFO in between is refused at once."""
    import pytest

    from neuro_bitnet.retrieval.loaders import SkipFile, read_bytes

    os.mkfifo(tmp_path / "pipe.txt")
    with pytest.raises(SkipFile, match="not a regular file"):
        read_bytes(tmp_path / "pipe.txt", 1000)


def test_symlink_fan_out_walks_each_folder_once(tmp_path: Path, monkeypatch) -> None:
    """Level i holds two links to level i+1: 2**18 paths, 19 real folders."""
    depth = 18
    for i in range(depth + 1):
        tree(tmp_path / f"level{i}", {f"f{i}.md": str(i)})
    for i in range(depth):
        for name in ("left", "right"):
            os.symlink(tmp_path / f"level{i + 1}", tmp_path / f"level{i}" / name)
    import neuro_bitnet.retrieval.files as files

    listed = []
    real_scandir = os.scandir
    monkeypatch.setattr(files.os, "scandir", lambda p: listed.append(p) or real_scandir(p))
    found = discover([tmp_path / "level0"], recursive=True)
    assert len(found.files) == depth + 1
    assert len(listed) == depth + 1  # each real folder listed once
    assert found.skipped == []


@pytest.mark.slow
def test_deeply_nested_folders_do_not_hit_the_recursion_limit(tmp_path: Path) -> None:
    chain = [tmp_path / "d"]
    for _ in range(1099):
        chain.append(chain[-1] / "d")
    try:
        for folder in chain:  # not mkdir(parents=True): that recurses itself
            folder.mkdir()
        (chain[-1] / "bottom.md").write_text("bottom")
        found = discover([tmp_path], recursive=True)
        assert [p.name for p in found.files] == ["bottom.md"] and found.skipped == []
    finally:  # shutil.rmtree (pytest's clean-up of old tmp dirs) recurses too: remove it here
        (chain[-1] / "bottom.md").unlink(missing_ok=True)
        for folder in reversed(chain):
            if folder.is_dir():
                folder.rmdir()
