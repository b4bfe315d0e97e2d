"""Find the files to index under the given paths: recursion, include/exclude globs, hidden
folders, `.gitignore` rules and symlink loops."""

from __future__ import annotations

import errno
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pathspec


@dataclass
class Skipped:
    """A file that was not indexed, and why."""

    path: str
    reason: str


@dataclass
class Discovery:
    """The result of walking the input paths."""

    files: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)  # problems worth listing
    filtered: Counter = field(default_factory=Counter)  # quiet skips by reason (hidden, gitignored...)
    roots: list[Path] = field(default_factory=list)  # absolute directories that were walked


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.EACCES:
        return "permission denied"
    return f"unreadable ({exc.strerror or exc})"


def _spec(globs: list[str]) -> pathspec.PathSpec | None:
    return pathspec.GitIgnoreSpec.from_lines(globs) if globs else None


def _git_root(start: Path) -> Path | None:
    for parent in [start, *start.parents]:
        if (parent / ".git").exists():
            return parent
    return None


class _IgnoreRules:
    """`.gitignore` files that apply to a directory, each matched relative to its own folder."""

    def __init__(self, rules: list[tuple[Path, pathspec.PathSpec]] | None = None) -> None:
        self.rules = rules or []

    def child(self, directory: Path) -> "_IgnoreRules":
        gitignore = directory / ".gitignore"
        try:
            lines = gitignore.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return self
        return _IgnoreRules(self.rules + [(directory, pathspec.GitIgnoreSpec.from_lines(lines))])

    def ignored(self, path: Path, is_dir: bool) -> bool:
        for base, spec in self.rules:
            try:
                rel = path.relative_to(base).as_posix()
            except ValueError:
                continue
            if spec.match_file(rel + "/" if is_dir else rel):
                return True
        return False


def _ancestor_rules(directory: Path) -> _IgnoreRules:
    """Rules from `.gitignore` files between the enclosing git root and `directory` (exclusive)."""
    root = _git_root(directory)
    rules = _IgnoreRules()
    if root is None or root == directory:
        return rules
    chain = [p for p in directory.parents if p == root or root in p.parents]
    for parent in reversed(chain):
        rules = rules.child(parent)
    return rules


def printable(path: str | Path) -> str:
    """A path as text that can always be printed and stored (undecodable bytes as \\xNN)."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def _valid_name(path: str | Path) -> bool:
    """Whether a path is valid UTF-8 (names with other bytes cannot be stored or shown as such)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def discover(
    paths: list[Path],
    *,
    recursive: bool = False,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    hidden: bool = False,
    gitignore: bool = True,
) -> Discovery:
    """Walk `paths` and return the files to index plus what was skipped.

    Files named explicitly are always taken unless excluded; files found in directories must also
    match `include` (when given) and not be hidden or git-ignored. Only regular files are taken,
    each real directory is walked once (however many symlinks lead to it), and the walk is
    iterative, so any depth works.
    """
    include_spec, exclude_spec = _spec(include or []), _spec(exclude or [])
    found = Discovery()
    seen: set[Path] = set()
    visited: set[tuple[int, int]] = set()  # (device, inode) of every directory walked

    def add(path: Path) -> None:
        real = path.resolve()
        if real not in seen:
            seen.add(real)
            found.files.append(path)

    for raw in paths:
        path = Path(os.path.abspath(os.path.expanduser(str(raw))))
        if not os.path.lexists(path):
            found.skipped.append(Skipped(printable(raw), "does not exist"))
            continue
        if not _valid_name(path):
            found.skipped.append(Skipped(printable(raw), "name is not valid UTF-8"))
            continue
        try:
            is_dir = path.is_dir()
        except OSError as exc:  # e.g. a symlink loop on the path itself
            found.skipped.append(Skipped(str(raw), _reason(exc)))
            continue
        if not is_dir:
            if not path.exists():
                found.skipped.append(Skipped(str(raw), "broken symlink"))
            elif not path.is_file():
                found.skipped.append(Skipped(str(raw), "not a regular file"))
            elif exclude_spec and exclude_spec.match_file(path.name):
                found.filtered["excluded"] += 1
            else:
                add(path)
            continue
        found.roots.append(path)
        rules = _ancestor_rules(path) if gitignore else _IgnoreRules()
        _walk(path, rules, recursive, include_spec, exclude_spec, hidden, gitignore, found, add, visited)
    return found


@dataclass
class _Frame:
    """A directory being listed during the walk."""

    path: Path
    key: tuple[int, int]
    rules: _IgnoreRules
    entries: list[os.DirEntry]
    next: int = 0


def _open_dir(directory: Path, rules: _IgnoreRules, gitignore: bool, found: Discovery,
              visited: set[tuple[int, int]], active: set[tuple[int, int]]) -> _Frame | None:
    """List a directory for the walk, or None (loop, already walked, unreadable)."""
    try:
        st = directory.stat()
    except OSError as exc:
        found.skipped.append(Skipped(str(directory), f"unreadable folder ({exc.strerror or exc})"))
        return None
    key = (st.st_dev, st.st_ino)
    if key in active:
        found.skipped.append(Skipped(str(directory), "symlink loop"))
        return None
    if key in visited:  # another symlink to a folder already walked
        found.filtered["folder already walked"] += 1
        return None
    visited.add(key)
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except PermissionError:
        found.skipped.append(Skipped(str(directory), "permission denied (folder)"))
        return None
    except OSError as exc:
        found.skipped.append(Skipped(str(directory), f"unreadable folder ({exc.strerror or exc})"))
        return None
    return _Frame(directory, key, rules.child(directory) if gitignore else rules, entries)


def _walk(
    root: Path,
    rules: _IgnoreRules,
    recursive: bool,
    include_spec: pathspec.PathSpec | None,
    exclude_spec: pathspec.PathSpec | None,
    hidden: bool,
    gitignore: bool,
    found: Discovery,
    add,
    visited: set[tuple[int, int]],
) -> None:
    """Depth-first, in name order, with an explicit stack (no recursion limit)."""
    active: set[tuple[int, int]] = set()  # directories on the current path, for loop detection
    first = _open_dir(root, rules, gitignore, found, visited, active)
    stack = [first] if first else []
    if first:
        active.add(first.key)
    while stack:
        frame = stack[-1]
        if frame.next == len(frame.entries):
            stack.pop()
            active.discard(frame.key)
            continue
        entry = frame.entries[frame.next]
        frame.next += 1
        path = Path(entry.path)
        if not _valid_name(entry.name):
            found.skipped.append(Skipped(printable(path), "name is not valid UTF-8"))
            continue
        rel = path.relative_to(root).as_posix()
        try:
            is_dir = entry.is_dir()  # follows symlinks
            is_file = entry.is_file()
        except OSError as exc:
            found.skipped.append(Skipped(str(path), _reason(exc)))
            continue
        if entry.name.startswith(".") and not hidden:
            found.filtered["hidden"] += 1
            continue
        if entry.name == ".git":
            continue
        if gitignore and frame.rules.ignored(path, is_dir):
            found.filtered["gitignored"] += 1
            continue
        if exclude_spec and exclude_spec.match_file(rel + "/" if is_dir else rel):
            found.filtered["excluded"] += 1
            continue
        if is_dir:
            if recursive:
                child = _open_dir(path, frame.rules, gitignore, found, visited, active)
                if child:
                    stack.append(child)
                    active.add(child.key)
            continue
        if not is_file:
            if entry.is_symlink() and not os.path.exists(path):
                try:
                    os.stat(path)
                except OSError as exc:
                    reason = "symlink loop" if exc.errno == errno.ELOOP else "broken symlink"
                    found.skipped.append(Skipped(str(path), reason))
            else:
                found.filtered["not a regular file"] += 1
            continue
        if include_spec and not include_spec.match_file(rel):
            found.filtered["not included"] += 1
            continue
        add(path)
