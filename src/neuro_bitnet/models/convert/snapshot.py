"""Fetch the files of a Hugging Face checkpoint (one revision) for conversion.

What is fetched: ``config.json`` (required), ``model.safetensors.index.json`` when the weights
are sharded (then every shard it names, else ``model.safetensors``), and the tokenizer files that
exist (``tokenizer.json``, ``tokenizer.model``, ``tokenizer_config.json``, ...).

Verification: safetensors shards go through :func:`models.download.download_file` (resumable,
sha256 from the hub's LFS headers, moved into place only when it matches). Small files are read
whole and checked against the hub's LFS sha256 when it sends one, else against the git blob id
the hub sends as ``ETag`` for regular (non-LFS) files.

When the revision is a branch name, the commit the hub reports for ``config.json``
(``X-Repo-Commit``) is used for every other file, so all files come from one snapshot.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import httpx

from neuro_bitnet.errors import DownloadError
from neuro_bitnet.models.download import download_file
from neuro_bitnet.models.hub import lfs_sha256, resolve_url
from neuro_bitnet.models.progress import ProgressReporter

SMALL_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "generation_config.json",
)
MAX_SMALL_FILE = 64 << 20
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_GIT_OID = re.compile(r'^(?:W/)?"?([0-9a-f]{40})"?$')


@dataclass
class Snapshot:
    """A fetched checkpoint folder."""

    dir: Path
    revision: str  # the commit when the hub reported one
    files: list[str] = field(default_factory=list)
    shard_bytes: int = 0


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file's content (what the hub sends as ETag for non-LFS files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _check(name: str, data: bytes, response: httpx.Response, label: str) -> None:
    sha = lfs_sha256(response.headers)
    if sha is not None:
        if hashlib.sha256(data).hexdigest() != sha:
            raise DownloadError(f"{label}: checksum mismatch for {name} (hub LFS sha256 {sha})")
        return
    oid = _GIT_OID.match(response.headers.get("etag", "").strip().lower())
    if oid and git_blob_sha1(data) != oid.group(1):
        raise DownloadError(f"{label}: checksum mismatch for {name} (hub git blob id {oid.group(1)})")


def _get_small(client: httpx.Client, url: str, name: str, headers: dict[str, str], label: str,
               required: bool) -> tuple[bytes | None, httpx.Response | None]:
    try:
        response = client.get(url, headers=headers, follow_redirects=True)
    except httpx.TimeoutException:
        raise DownloadError(f"{label}: timed out fetching {name} from {url}") from None
    except httpx.HTTPError as exc:
        raise DownloadError(
            f"{label}: cannot fetch {name} from {url} ({exc}); check your network or HF_ENDPOINT"
        ) from None
    if response.status_code == 404 and not required:
        return None, None
    if response.status_code in (401, 403):
        raise DownloadError(
            f"{label}: access denied (HTTP {response.status_code}) for {url}; set HF_TOKEN if the repo is gated"
        )
    if response.status_code != 200:
        raise DownloadError(f"{label}: HTTP {response.status_code} fetching {url}")
    if len(response.content) > MAX_SMALL_FILE:
        raise DownloadError(f"{label}: {name} is larger than {MAX_SMALL_FILE >> 20} MB; refusing it")
    # Redirected responses lose the hub's headers; the first hop carries them.
    first = response.history[0] if response.history else response
    _check(name, response.content, first if lfs_sha256(first.headers) else response, label)
    return response.content, first


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _shard_names(index: bytes, label: str) -> list[str]:
    try:
        names = sorted(set(json.loads(index)["weight_map"].values()))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DownloadError(f"{label}: malformed model.safetensors.index.json") from None
    for name in names:
        parts = PurePosixPath(name).parts
        if not name.endswith(".safetensors") or len(parts) != 1 or name.startswith("."):
            raise DownloadError(f"{label}: unexpected shard name {name!r} in the index")
    return names


def fetch_snapshot(
    endpoint: str,
    repo: str,
    revision: str,
    dest: Path,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
    retries: int = 0,
    progress: ProgressReporter | None = None,
    label: str = "",
    transport: httpx.BaseTransport | None = None,
) -> Snapshot:
    """Download a checkpoint's config, tokenizer and safetensors shards into ``dest`` (verified)."""
    headers = headers or {}
    label = label or repo
    dest.mkdir(parents=True, exist_ok=True)
    snap = Snapshot(dest, revision)
    with httpx.Client(timeout=httpx.Timeout(timeout), transport=transport) as client:
        config, first = _get_small(client, resolve_url(endpoint, repo, "config.json", revision), "config.json",
                                   headers, label, required=True)
        commit = (first.headers.get("x-repo-commit") or "").lower() if first is not None else ""
        if _COMMIT.match(commit) and not _COMMIT.match(revision):
            snap.revision = commit
        url = lambda name: resolve_url(endpoint, repo, name, snap.revision)  # noqa: E731
        _write(dest / "config.json", config)
        snap.files.append("config.json")
        index, _ = _get_small(client, url("model.safetensors.index.json"), "model.safetensors.index.json",
                              headers, label, required=False)
        if index is not None:
            _write(dest / "model.safetensors.index.json", index)
            snap.files.append("model.safetensors.index.json")
            shards = _shard_names(index, label)
        else:
            shards = ["model.safetensors"]
        for name in SMALL_FILES:
            data, _ = _get_small(client, url(name), name, headers, label, required=False)
            if data is not None:
                _write(dest / name, data)
                snap.files.append(name)
    for name in shards:
        result = download_file(url(name), dest / name, headers=headers, timeout=timeout, retries=retries,
                               progress=progress, label=f"{label} {name}", transport=transport)
        snap.files.append(name)
        snap.shard_bytes += result.size
    return snap
