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
    match `include` (when given) and not be hidden or git-ignored.
    """
    include_spec, exclude_spec = _spec(include or []), _spec(exclude or [])
    found = Discovery()
    seen: set[Path] = set()

    def add(path: Path) -> None:
        real = path.resolve()
        if real not in seen:
            seen.add(real)
            found.files.append(path)

    for raw in paths:
        path = Path(os.path.abspath(os.path.expanduser(str(raw))))
        if not os.path.lexists(path):
            found.skipped.append(Skipped(str(raw), "does not exist"))
            continue
        try:
            is_dir = path.is_dir()
        except OSError as exc:  # e.g. a symlink loop on the path itself
            found.skipped.append(Skipped(str(raw), _reason(exc)))
            continue
        if not is_dir:
            if not path.exists():
                found.skipped.append(Skipped(str(raw), "broken symlink"))
            elif exclude_spec and exclude_spec.match_file(path.name):
                found.filtered["excluded"] += 1
            else:
                add(path)
            continue
        found.roots.append(path)
        rules = _ancestor_rules(path) if gitignore else _IgnoreRules()
        _walk(path, path, rules, recursive, include_spec, exclude_spec, hidden, gitignore, found, add, set())
    return found


def _walk(
    root: Path,
    directory: Path,
    rules: _IgnoreRules,
    recursive: bool,
    include_spec: pathspec.PathSpec | None,
    exclude_spec: pathspec.PathSpec | None,
    hidden: bool,
    gitignore: bool,
    found: Discovery,
    add,
    active: set[tuple[int, int]],
) -> None:
    try:
        st = directory.stat()
    except OSError as exc:
        found.skipped.append(Skipped(str(directory), f"unreadable folder ({exc.strerror or exc})"))
        return
    key = (st.st_dev, st.st_ino)
    if key in active:
        found.skipped.append(Skipped(str(directory), "symlink loop"))
        return
    active = active | {key}
    if gitignore:
        rules = rules.child(directory)
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except PermissionError:
        found.skipped.append(Skipped(str(directory), "permission denied (folder)"))
        return
    except OSError as exc:
        found.skipped.append(Skipped(str(directory), f"unreadable folder ({exc.strerror or exc})"))
        return
    for entry in entries:
        path = Path(entry.path)
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
        if gitignore and rules.ignored(path, is_dir):
            found.filtered["gitignored"] += 1
            continue
        if exclude_spec and exclude_spec.match_file(rel + "/" if is_dir else rel):
            found.filtered["excluded"] += 1
            continue
        if is_dir:
            if recursive:
                _walk(root, path, rules, recursive, include_spec, exclude_spec, hidden, gitignore, found, add, active)
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
