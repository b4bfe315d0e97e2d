"""The model manager: resolve names, report what is on disk, download, remove.

Its one promise to the rest of the package: `ensure_model` hands out a local path to a file
that is either the user's own `.gguf` or a catalog file whose sha256 was verified.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from neuro_bitnet.config import Settings, load_settings
from neuro_bitnet.errors import DownloadError, ModelNotFoundError, NeuroError
from neuro_bitnet.models.catalog import SYNTHETIC_DIR, Catalog, CatalogEntry, load_catalog
from neuro_bitnet.models.hub import auth_headers
from neuro_bitnet.models.progress import format_size, make_progress
from neuro_bitnet.models.store import LOCK_SUFFIX, ModelFiles, lock_or_wait, read_record, sha256_file, write_record


class ModelUnavailableError(DownloadError):
    """The catalog knows the model but there is no GGUF file to download for it (yet)."""


SOURCE_DIR = "source"  # a conversion's downloaded checkpoint, next to the GGUF
CONVERTING_SUFFIX = ".converting.gguf"


@dataclass(frozen=True)
class ModelStatus:
    """What is on disk for one catalog entry.

    `state`: "verified" (file present, hash recorded), "unverified" (file present, no matching
    record), "partial" (only a `.part`), "absent", or "convert" (no GGUF exists to download).
    """

    entry: CatalogEntry
    state: str
    path: Path
    size_on_disk: int
    recorded_sha256: str | None
    verified_by: str | None
    partial_bytes: int

    @property
    def downloaded(self) -> bool:
        return self.state == "verified"


@dataclass(frozen=True)
class CacheFile:
    path: Path
    size: int


@dataclass(frozen=True)
class CacheInfo:
    """The models directory: its files, their total size and the free space around them."""

    models_dir: Path
    exists: bool
    files: list[CacheFile]
    total_bytes: int
    free_bytes: int | None


def _looks_like_path(name: str) -> bool:
    return (
        name.lower().endswith(".gguf")
        or "/" in name
        or os.sep in name
        or name.startswith(("~", "."))
    )


class ModelManager:
    """List, download, verify and remove models in `settings.models_dir`."""

    def __init__(self, settings: Settings | None = None, catalog: Catalog | None = None) -> None:
        self.settings = settings or load_settings()
        self._catalog = catalog

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = load_catalog(self.settings)
        return self._catalog

    @property
    def models_dir(self) -> Path:
        return self.settings.models_dir

    def entries(self) -> list[CatalogEntry]:
        """All catalog entries, built-in first, then the user's."""
        return list(self.catalog)

    def resolve(self, name_or_path: str | Path) -> CatalogEntry | Path:
        """A catalog entry for an id/alias, or the path of an existing local model file."""
        if isinstance(name_or_path, Path) or _looks_like_path(str(name_or_path)):
            return self._local_file(Path(name_or_path))
        entry = self.catalog.find(str(name_or_path))
        if entry is not None:
            return entry
        if Path(name_or_path).is_file():
            return Path(name_or_path).resolve()
        return self.catalog.get(str(name_or_path))  # raises with a helpful message

    def entry(self, name: str) -> CatalogEntry:
        """The catalog entry for an id or alias (a file path is an error here)."""
        resolved = self.resolve(name)
        if isinstance(resolved, Path):
            raise ModelNotFoundError(f"{name} is a local file, not a catalog model")
        return resolved

    @staticmethod
    def _local_file(path: Path) -> Path:
        path = path.expanduser()
        if not path.exists():
            raise ModelNotFoundError(f"model file not found: {path}")
        if not path.is_file():
            raise ModelNotFoundError(f"not a model file: {path}")
        return path.resolve()

    def files(self, entry: CatalogEntry) -> ModelFiles:
        """Where this entry's file, partial download, hash record and lock live."""
        if entry.kind == "synthetic":
            from neuro_bitnet.engine.synthetic import synthetic_file

            return ModelFiles(synthetic_file(entry.file or "", self.models_dir / SYNTHETIC_DIR))
        return ModelFiles(self.models_dir / entry.id / entry.filename)

    def source_dir(self, entry: CatalogEntry) -> Path:
        """Where a conversion keeps the downloaded safetensors checkpoint."""
        return self.files(entry).dir / SOURCE_DIR

    def _converting_path(self, entry: CatalogEntry) -> Path:
        files = self.files(entry)
        return files.dir / f".{files.model.name}{CONVERTING_SUFFIX}"

    def source_bytes(self, entry: CatalogEntry) -> int:
        """Bytes of downloaded (or partially downloaded) checkpoint files kept for a conversion."""
        src = self.source_dir(entry)
        if not src.is_dir():
            return 0
        return sum(p.stat().st_size for p in src.iterdir() if p.is_file() and not p.name.endswith(LOCK_SUFFIX))

    def local_path(self, entry: CatalogEntry) -> Path | None:
        """The verified local file of `entry`, or None if it is not (fully) downloaded."""
        status = self.status(entry)
        return status.path if status.downloaded else None

    def status(self, entry: CatalogEntry) -> ModelStatus:
        """What is on disk for `entry` (cheap: reads the recorded hash, does not re-hash)."""
        files = self.files(entry)
        size = files.model.stat().st_size if files.model.is_file() else 0
        partial = files.part.stat().st_size if files.part.is_file() else 0
        recorded = read_record(files) if files.model.is_file() else None
        verified_by = None
        if entry.kind == "synthetic":  # no hash to check: the builder writes it atomically
            state = "verified" if files.model.is_file() else "absent"
            verified_by = "built locally (random weights)" if files.model.is_file() else None
        elif entry.kind == "convert" and not files.model.is_file():
            partial = self.source_bytes(entry)
            state = "partial" if partial else "convert"
        elif files.model.is_file():
            good = recorded is not None and (entry.sha256 is None or recorded == entry.sha256)
            good = good and (entry.size is None or size == entry.size)
            state = "verified" if good else "unverified"
            if good and entry.kind == "convert":
                verified_by = "converted from hub-verified safetensors"
            elif good:
                verified_by = "pinned sha256" if entry.sha256 else "hub LFS sha256"
        else:
            state = "partial" if files.part.is_file() else "absent"
        return ModelStatus(entry, state, files.model, size, recorded, verified_by, partial)

    def download(
        self, entry: CatalogEntry | str, force: bool = False, progress: bool = True, keep_source: bool = False
    ) -> Path:
        """Download and verify `entry`'s file (no-op if already verified, unless `force`).

        A `kind="convert"` entry downloads the safetensors checkpoint and converts it (see
        `download_and_convert`).
        """
        if isinstance(entry, str):
            entry = self.entry(entry)
        if entry.kind == "synthetic":
            return self.build_synthetic(entry, force=force, progress=progress)
        if entry.kind == "convert":
            return self.download_and_convert(entry, force=force, progress=progress, keep_source=keep_source)
        url = entry.download_url(self.settings.hf_endpoint)
        # The token goes to the hub only, never to a third-party URL from a user catalog.
        to_hub = url.startswith(self.settings.hf_endpoint + "/")
        reporter = make_progress(progress)
        from neuro_bitnet.models.download import download_file  # httpx: only when downloading

        try:
            result = download_file(
                url,
                self.files(entry).model,
                sha256=entry.sha256,
                size=entry.size,
                headers=auth_headers(self.settings.hf_token) if to_hub else {},
                timeout=self.settings.timeout,
                retries=self.settings.retries,
                force=force,
                progress=reporter,
                label=entry.id,
            )
        except KeyboardInterrupt:
            kept = self.status(entry).partial_bytes
            if kept:
                reporter.note(
                    f"download of {entry.id} interrupted; {format_size(kept)} kept, "
                    f"run `neuro model download {entry.id}` to resume"
                )
            raise
        return result.path

    def build_synthetic(self, entry: CatalogEntry, *, force: bool = False, progress: bool = True) -> Path:
        """Build the random-weight model of a synthetic entry (once; `force` builds it again)."""
        from neuro_bitnet.engine.synthetic import synthetic_model_path

        files = self.files(entry)
        if force:
            files.model.unlink(missing_ok=True)
        if not files.model.is_file():
            make_progress(progress).note(
                f"{entry.id}: building the random-weight model once"
                + (f" (~{format_size(entry.disk_size)})" if entry.disk_size else "") + f" in {files.dir}")
        return synthetic_model_path(entry.file or "", files.dir)

    def download_and_convert(
        self, entry: CatalogEntry, *, force: bool = False, progress: bool = True, keep_source: bool = False
    ) -> Path:
        """Fetch the checkpoint of a convert entry, convert it, check the result loads and runs a
        token, record its sha256; delete the checkpoint unless `keep_source`.

        Interrupted runs resume: verified shards are kept, partial ones continue from where they
        stopped, and the conversion starts over.
        """
        from neuro_bitnet.models.convert import convert_checkpoint
        from neuro_bitnet.models.convert.snapshot import fetch_snapshot
        from neuro_bitnet.models.convert.verify import check_loads

        if not entry.repo:
            raise ModelUnavailableError(f"{entry.id} has no source repo to convert from")
        files = self.files(entry)
        files.dir.mkdir(parents=True, exist_ok=True)
        reporter = make_progress(progress)
        lock = lock_or_wait(files.lock, entry.id, reporter.note)
        try:
            if not force and self.status(entry).downloaded:
                return files.model
            src = self.source_dir(entry)
            to_hub = auth_headers(self.settings.hf_token)
            try:
                snap = fetch_snapshot(
                    self.settings.hf_endpoint, entry.repo, entry.revision, src, headers=to_hub,
                    timeout=self.settings.timeout, retries=self.settings.retries, progress=reporter,
                    label=entry.id,
                )
            except KeyboardInterrupt:
                kept = self.source_bytes(entry)
                reporter.note(
                    f"download of {entry.id} interrupted; {format_size(kept)} kept, "
                    f"run `neuro model download {entry.id}` to resume"
                )
                raise
            tmp = self._converting_path(entry)
            shard_size = format_size(snap.shard_bytes)
            reporter.note(f"{entry.id}: checkpoint verified ({shard_size}, revision {snap.revision})")
            convert_checkpoint(src, tmp, progress=make_progress(progress, verb="converting"), label=entry.id)
            try:
                check_loads(tmp)
                digest = sha256_file(tmp)
                write_record(files, digest)
                os.replace(tmp, files.model)
            finally:
                tmp.unlink(missing_ok=True)
            if keep_source:
                reporter.note(f"{entry.id}: checkpoint kept in {src}")
            else:
                shutil.rmtree(src, ignore_errors=True)
        finally:
            lock.release()
        return files.model

    def ensure_model(
        self, name_or_path: str | Path, *, assume_yes: bool, confirm: Callable[[str], bool] | None = None
    ) -> Path:
        """A verified local path for a model id or a local file, downloading if needed.

        A missing catalog model is downloaded right away with `assume_yes`, after
        `confirm(question)` says yes (the caller's way to ask a person, None when nobody can
        answer), and refused with a hint otherwise.
        """
        resolved = self.resolve(name_or_path)
        if isinstance(resolved, Path):
            return resolved
        entry = resolved
        path = self.local_path(entry)
        if path is not None:
            return path
        if entry.kind == "synthetic":  # nothing to download: built here, no question asked
            return self.build_synthetic(entry)
        size = format_size(entry.size) if entry.size else "size unknown"
        if entry.kind == "convert":
            peak = f", {format_size(entry.peak_disk_size)} while converting" if entry.peak_disk_size else ""
            size = f"~{format_size(entry.disk_size)}{peak}" if entry.disk_size else "size unknown"
        if not assume_yes:
            if confirm is None:
                raise ModelNotFoundError(
                    f"model {entry.id} ({size}) is not downloaded; run `neuro model download "
                    f"{entry.id}` first, or pass --yes to download it now"
                )
            what = f"{entry.name}, {size}" if entry.name != entry.id else size
            question = f"Model {entry.id} ({what}) is not downloaded. Download it to {self.models_dir}?"
            if not confirm(question):
                raise ModelNotFoundError(
                    f"model {entry.id} is not downloaded; run `neuro model download {entry.id}` when ready"
                )
        return self.download(entry)

    def verify(self, entry: CatalogEntry) -> tuple[bool, str]:
        """Re-hash the local file; (matches the pinned or recorded hash, actual sha256)."""
        files = self.files(entry)
        if not files.model.is_file():
            raise ModelNotFoundError(f"model {entry.id} is not downloaded")
        if entry.kind == "synthetic":
            raise NeuroError(f"{entry.id} is built locally from random weights; it has no published sha256")
        actual = sha256_file(files.model)
        expected = entry.sha256 or read_record(files)
        return expected == actual, actual

    def remove(self, entry: CatalogEntry) -> list[Path]:
        """Delete the model file, its partial download, hash record and cached heads; returns
        what was deleted."""
        import filelock

        from neuro_bitnet.engine import heads

        files = self.files(entry)
        lock = filelock.FileLock(files.lock)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            raise NeuroError(f"{entry.id} is being downloaded by another process; try again later") from None
        removed = []
        try:
            removed += heads.forget(files.model)
            for path in (files.model, files.part, files.record, self._converting_path(entry)):
                if path.exists():
                    path.unlink()
                    removed.append(path)
            src = self.source_dir(entry)
            if src.is_dir():
                shutil.rmtree(src)
                removed.append(src)
        finally:
            lock.release()
        files.lock.unlink(missing_ok=True)
        try:
            files.dir.rmdir()
        except OSError:
            pass
        return removed

    def cache_info(self) -> CacheInfo:
        """Files in the models directory (lock files aside), total size, free space."""
        root = self.models_dir
        found = []
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                if path.is_file() and not path.name.endswith(LOCK_SUFFIX):
                    found.append(CacheFile(path, path.stat().st_size))
        probe = root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            free = shutil.disk_usage(probe).free
        except OSError:
            free = None
        return CacheInfo(root, root.is_dir(), found, sum(f.size for f in found), free)
