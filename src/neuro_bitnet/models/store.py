"""On-disk layout of downloaded models and their recorded (verified) sha256."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from neuro_bitnet.models.hub import normalize_sha256

if TYPE_CHECKING:
    import filelock

PART_SUFFIX = ".part"
RECORD_SUFFIX = ".sha256"
LOCK_SUFFIX = ".lock"


@dataclass(frozen=True)
class ModelFiles:
    """Paths that belong to one model file: the file, its partial download, hash record, lock."""

    model: Path

    @property
    def dir(self) -> Path:
        return self.model.parent

    @property
    def part(self) -> Path:
        return self.model.with_name(self.model.name + PART_SUFFIX)

    @property
    def record(self) -> Path:
        return self.model.with_name(self.model.name + RECORD_SUFFIX)

    @property
    def lock(self) -> Path:
        return self.model.with_name(self.model.name + LOCK_SUFFIX)

    def all(self) -> list[Path]:
        return [self.model, self.part, self.record, self.lock]


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def read_record(files: ModelFiles) -> str | None:
    """The sha256 recorded for a verified file (`sha256sum` format), or None."""
    try:
        text = files.record.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    fields = text.split()
    return normalize_sha256(fields[0]) if fields else None


def write_record(files: ModelFiles, sha256: str) -> None:
    """Record a verified hash next to the file, atomically (`sha256sum -c` can check it)."""
    tmp = files.record.with_name(files.record.name + ".tmp")
    tmp.write_text(f"{sha256}  {files.model.name}\n", encoding="utf-8")
    os.replace(tmp, files.record)


def lock_or_wait(path: Path, label: str, note: Callable[[str], None]) -> filelock.FileLock:
    """The lock file ``path``, held; when another process holds it, ``note`` says so and this waits."""
    import filelock  # imported when a download runs, not for every model lookup

    lock = filelock.FileLock(path)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        note(f"another download of {label} is in progress; waiting for it to finish...")
        lock.acquire()
    return lock
