"""Resumable, verified HTTP download of one file.

The file is written to `<name>.part`, resumed with an HTTP Range request when a `.part` exists,
checked against a sha256 (pinned, or the hub's LFS hash), and only then moved into place
atomically, with the verified hash recorded next to it. A lock file keeps two processes from
writing the same `.part`.

Every download is bounded (`Limits`): never more bytes than the expected size (the server's, else
the catalog's, else a sane maximum), free disk space re-checked as a file of unknown size grows,
and a transfer slower than a minimum rate over a whole window counts as stalled (a server that
trickles a byte at a time never trips the read timeout).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx

from neuro_bitnet.errors import DownloadError
from neuro_bitnet.models.hub import lfs_sha256, lfs_size
from neuro_bitnet.models.progress import NullProgress, ProgressReporter, format_size
from neuro_bitnet.models.store import ModelFiles, lock_or_wait, read_record, sha256_file, write_record

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_MAX_REDIRECTS = 10
_MAX_RESTARTS = 2


@dataclass(frozen=True)
class Limits:
    """Bounds on one download.

    `max_bytes`: the most a file of unknown size may grow to. `reserve_bytes`: free space to leave
    on the disk while such a file grows, checked every `space_check_bytes`. A transfer that brings
    fewer than `min_rate` bytes/s over `stall_seconds` is stalled (retried, resuming the `.part`).
    """

    max_bytes: int = 32 * 1024**3  # the largest catalog file is ~4 GB
    reserve_bytes: int = 256 * 1024**2
    space_check_bytes: int = 64 * 1024**2
    stall_seconds: float = 60.0
    min_rate: float = 1024.0


@dataclass(frozen=True)
class DownloadResult:
    """A verified file in place. `hash_source`: "pinned", "hub" or "cached" (already there)."""

    path: Path
    sha256: str
    size: int
    hash_source: str


class _Retry(Exception):
    """A transient failure: the same request may succeed later (resuming from the `.part`)."""


class _Restart(Exception):
    """The `.part` cannot be resumed; it was discarded and the download starts over."""


@dataclass(frozen=True)
class _Plan:
    """What the server told us before the body: where to write from and what to expect."""

    response: httpx.Response
    offset: int
    total: int | None
    sha256: str
    hash_source: str


def download_file(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
    retries: int = 0,
    force: bool = False,
    progress: ProgressReporter | None = None,
    label: str | None = None,
    transport: httpx.BaseTransport | None = None,
    limits: Limits | None = None,
) -> DownloadResult:
    """Download `url` to `dest`, verified against `sha256` (or the hub's LFS hash if None).

    Returns at once, without network, if `dest` is already verified (unless `force`).
    Transient failures are retried `retries` times, each resuming the `.part` file.
    Raises DownloadError with a one-line message; KeyboardInterrupt leaves a resumable `.part`.
    """
    files = ModelFiles(dest)
    progress = progress or NullProgress()
    label = label or dest.name
    try:
        return _locked_download(url, files, sha256, size, headers or {}, timeout, retries, force, progress,
                                label, transport, limits or Limits())
    except OSError as exc:  # disk full, read-only or missing directory, permissions
        where = f" ({exc.filename})" if exc.filename else ""
        raise DownloadError(f"{label}: cannot write the download{where}: {exc.strerror or exc}") from None


def _locked_download(
    url: str,
    files: ModelFiles,
    sha256: str | None,
    size: int | None,
    headers: dict[str, str],
    timeout: float,
    retries: int,
    force: bool,
    progress: ProgressReporter,
    label: str,
    transport: httpx.BaseTransport | None,
    limits: Limits,
) -> DownloadResult:
    files.dir.mkdir(parents=True, exist_ok=True)
    lock = lock_or_wait(files.lock, label, progress.note)
    try:
        if not force:
            cached = _already_verified(files, sha256, size)
            if cached is not None:
                return cached
        elif files.part.exists():
            files.part.unlink()
        client = httpx.Client(timeout=httpx.Timeout(timeout), transport=transport)
        with client:
            return _download_with_retries(
                client, url, files, sha256, size, headers, retries, progress, label, limits
            )
    finally:
        lock.release()


def _already_verified(files: ModelFiles, sha256: str | None, size: int | None) -> DownloadResult | None:
    """The existing file if it is known good: recorded hash matches (or is hashed now against a pin)."""
    if not files.model.is_file():
        return None
    actual_size = files.model.stat().st_size
    if size is not None and actual_size != size:
        return None
    recorded = read_record(files)
    if recorded is not None and (sha256 is None or recorded == sha256):
        return DownloadResult(files.model, recorded, actual_size, "cached")
    if sha256 is not None and sha256_file(files.model) == sha256:
        write_record(files, sha256)
        return DownloadResult(files.model, sha256, actual_size, "cached")
    return None


def _download_with_retries(
    client: httpx.Client,
    url: str,
    files: ModelFiles,
    sha256: str | None,
    size: int | None,
    headers: dict[str, str],
    retries: int,
    progress: ProgressReporter,
    label: str,
    limits: Limits,
) -> DownloadResult:
    attempt = restarts = 0
    while True:
        try:
            return _attempt(client, url, files, sha256, size, headers, progress, label, limits)
        except _Restart as exc:
            restarts += 1
            if restarts > _MAX_RESTARTS:
                raise DownloadError(f"{label}: {exc}") from None
            progress.note(f"{label}: {exc}; starting over")
        except _Retry as exc:
            kept = files.part.stat().st_size if files.part.exists() else 0
            if attempt >= retries:
                hint = f"; {format_size(kept)} kept, run the same command again to resume" if kept else ""
                raise DownloadError(f"{label}: {exc}{hint}") from None
            attempt += 1
            delay = min(0.5 * 2 ** (attempt - 1), 10.0)
            progress.note(f"{label}: {exc}; retrying in {delay:g}s ({attempt}/{retries})")
            time.sleep(delay)


def _attempt(
    client: httpx.Client,
    url: str,
    files: ModelFiles,
    sha256: str | None,
    size: int | None,
    headers: dict[str, str],
    progress: ProgressReporter,
    label: str,
    limits: Limits,
) -> DownloadResult:
    offset = files.part.stat().st_size if files.part.exists() else 0
    if size is not None and offset >= size:
        if offset == size and sha256 is not None:
            return _finalize(files, sha256_file(files.part), sha256, "pinned")
        files.part.unlink()
        offset = 0
    try:
        plan = _open(client, url, files, offset, sha256, size, headers, label)
        try:
            return _receive(plan, files, progress, label, limits)
        finally:
            plan.response.close()
    except httpx.TimeoutException:
        raise _Retry(f"timed out after {client.timeout.read:g}s waiting for {_host(url)}") from None
    except httpx.ConnectError as exc:
        raise _Retry(f"cannot connect to {_host(url)} ({_reason(exc)}); check your network or HF_ENDPOINT") from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise DownloadError(f"{label}: invalid download URL {url}: {exc}") from None
    except httpx.TransportError as exc:
        done = files.part.stat().st_size if files.part.exists() else 0
        raise _Retry(f"connection to {_host(url)} lost after {format_size(done)} ({_reason(exc)})") from None


def _open(
    client: httpx.Client,
    url: str,
    files: ModelFiles,
    offset: int,
    sha256: str | None,
    size: int | None,
    base_headers: dict[str, str],
    label: str,
) -> _Plan:
    """Send the GET (following redirects by hand to see the hub's LFS headers) and check it."""
    headers = {**base_headers, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = client.build_request("GET", url, headers=headers)
    hub_sha: str | None = None
    hub_size: int | None = None
    for _ in range(_MAX_REDIRECTS + 1):
        response = client.send(request, stream=True, follow_redirects=False)
        hub_sha = hub_sha or lfs_sha256(response.headers)
        hub_size = hub_size or lfs_size(response.headers)
        if not (response.is_redirect and response.next_request):
            break
        response.close()
        request = response.next_request
    else:
        raise DownloadError(f"{label}: too many redirects from {url}")
    try:
        return _plan(response, url, files, offset, sha256, size, hub_sha, hub_size, label,
                     "Authorization" in base_headers)
    except BaseException:
        response.close()
        raise


def _plan(
    response: httpx.Response,
    url: str,
    files: ModelFiles,
    offset: int,
    sha256: str | None,
    size: int | None,
    hub_sha: str | None,
    hub_size: int | None,
    label: str,
    sent_token: bool,
) -> _Plan:
    status = response.status_code
    said = response.headers.get("x-error-message", "").strip()
    hub_says = f" (hub: {said[:200]})" if said else ""
    if status in (401, 403):
        hint = (
            "HF_TOKEN is set but was refused: check that it is valid and has access to this repo"
            if sent_token
            else "if the model is gated or private, set HF_TOKEN to a Hugging Face access token"
        )
        raise DownloadError(f"{label}: access denied (HTTP {status}){hub_says} for {url}; {hint}")
    if status == 404:
        raise DownloadError(
            f"{label}: not found (HTTP 404){hub_says}: {url}; check the catalog entry and HF_ENDPOINT"
        )
    if status == 416:
        files.part.unlink(missing_ok=True)
        raise _Restart("the server cannot resume the partial download")
    if status == 429 or status >= 500:
        raise _Retry(f"server error (HTTP {status}) from {_host(url)}")
    if status not in (200, 206):
        raise DownloadError(f"{label}: unexpected HTTP {status} from {url}")

    length = response.headers.get("content-length", "")
    total: int | None = None
    if status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
        if not match or int(match.group(1)) != offset:
            files.part.unlink(missing_ok=True)
            raise _Restart("the server answered with a different byte range")
        total = int(match.group(3)) if match.group(3) != "*" else None
    else:
        offset = 0  # no Range sent, or the server ignored it: full download
        total = int(length) if length.isdigit() else None
    total = hub_size or total

    if sha256 is not None and hub_sha is not None and hub_sha != sha256:
        raise DownloadError(
            f"{label}: the server reports sha256 {hub_sha} but the catalog pins {sha256}; "
            "refusing to download a different file"
        )
    if size is not None and total is not None and total != size:
        raise DownloadError(
            f"{label}: the server offers {total} bytes but the catalog expects {size}; "
            "refusing to download a different file"
        )
    expected, source = (sha256, "pinned") if sha256 else (hub_sha, "hub")
    if expected is None:
        raise DownloadError(
            f"{label}: no sha256 to verify {url} against (none pinned, none from the hub); "
            "add sha256 to its catalog entry"
        )
    total = total if total is not None else size
    if total is not None:
        _check_disk_space(files.dir, total - offset, label)
    return _Plan(response, offset, total, expected, source)


def _receive(plan: _Plan, files: ModelFiles, progress: ProgressReporter, label: str,
             limits: Limits) -> DownloadResult:
    """Stream the body into the `.part` within `limits`, then verify and move into place."""
    digest = hashlib.sha256()
    if plan.offset:
        with open(files.part, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    elif files.part.exists():
        if files.part.stat().st_size:
            progress.note(f"{label}: the server does not support resuming; downloading from the start")
        files.part.unlink()
    written = plan.offset
    limit = plan.total if plan.total is not None else limits.max_bytes
    next_space_check = written  # only a file of unknown size needs checks as it grows
    rate = _RateWatch(limits)
    progress.start(label, plan.total, plan.offset)
    try:
        with open(files.part, "ab") as out:
            for chunk in plan.response.iter_raw():
                if written + len(chunk) > limit:
                    files.part.unlink(missing_ok=True)
                    what = (f"the expected {plan.total} bytes" if plan.total is not None
                            else f"{format_size(limits.max_bytes)} without saying the file's size")
                    raise DownloadError(f"{label}: the server sent more than {what}; the partial download was deleted")
                if plan.total is None and written >= next_space_check:
                    _check_disk_space(files.dir, limits.reserve_bytes, label, growing=True)
                    next_space_check = written + limits.space_check_bytes
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)
                progress.advance(len(chunk))
                stalled = rate.add(len(chunk))
                if stalled:
                    raise _Retry(f"the transfer stalled: {stalled}")
            out.flush()
            os.fsync(out.fileno())
    finally:
        progress.finish()
    if plan.total is not None and written < plan.total:
        raise _Retry(f"connection closed after {format_size(written)} of {format_size(plan.total)}")
    return _finalize(files, digest.hexdigest(), plan.sha256, plan.hash_source)


class _RateWatch:
    """Bytes per window of `stall_seconds`; says when a whole window stayed under `min_rate`."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.start = time.monotonic()
        self.bytes = 0

    def add(self, n: int) -> str | None:
        """Count ``n`` bytes; a description of the stall, or None while the rate is fine."""
        self.bytes += n
        elapsed = time.monotonic() - self.start
        if elapsed < self.limits.stall_seconds:
            return None
        if self.bytes < self.limits.min_rate * elapsed:
            return (f"{format_size(self.bytes)} in the last {elapsed:.0f} s "
                    f"(under {format_size(int(self.limits.min_rate))}/s)")
        self.start, self.bytes = time.monotonic(), 0
        return None


def _finalize(files: ModelFiles, actual: str, expected: str, source: str) -> DownloadResult:
    if actual != expected:
        files.part.unlink(missing_ok=True)
        what = "pinned" if source == "pinned" else "hub (LFS)"
        raise DownloadError(
            f"{files.model.name}: checksum mismatch: expected {what} sha256 {expected}, "
            f"got {actual}; the partial download was deleted"
        )
    size = files.part.stat().st_size
    write_record(files, actual)
    os.replace(files.part, files.model)
    return DownloadResult(files.model, actual, size, source)


def _check_disk_space(directory: Path, needed: int, label: str, *, growing: bool = False) -> None:
    """DownloadError when fewer than ``needed`` bytes are free (``growing``: the reserve to keep
    while a file of unknown size grows; its `.part` is kept, to resume once there is room)."""
    free = shutil.disk_usage(directory).free
    if needed > free:
        what = (f"fewer than {format_size(needed)} left" if growing else f"need {format_size(needed)}")
        raise DownloadError(
            f"{label}: not enough disk space in {directory}: {what}, "
            f"{format_size(free)} free (set NEURO_BITNET_MODELS_DIR to use another disk)"
        )


def _host(url: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.netloc}" if parsed.netloc else url


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    if not text and exc.__context__ is not None:
        text = str(exc.__context__)
    return text.splitlines()[0][:200] if text else type(exc).__name__
