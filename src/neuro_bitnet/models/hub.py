"""Hugging Face hub addressing: file URLs under `HF_ENDPOINT`, auth headers, LFS metadata."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def resolve_url(endpoint: str, repo: str, file: str, revision: str = "main") -> str:
    """URL of `file` in `repo` at `revision`: `{endpoint}/{repo}/resolve/{revision}/{file}`."""
    return (
        f"{endpoint.rstrip('/')}/{quote(repo, safe='/')}/resolve/"
        f"{quote(revision, safe='')}/{quote(file, safe='/')}"
    )


def repo_url(endpoint: str, repo: str) -> str:
    """Web page of a repo on the hub."""
    return f"{endpoint.rstrip('/')}/{quote(repo, safe='/')}"


def auth_headers(token: str | None) -> dict[str, str]:
    """`Authorization: Bearer` header when a token is set, else nothing."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def normalize_sha256(value: str | None) -> str | None:
    """A lowercase 64-hex sha256 from an ETag-like value (quotes, `W/` stripped), else None."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"').lower()
    return value if _SHA256.match(value) else None


def lfs_sha256(headers: Mapping[str, str]) -> str | None:
    """The sha256 the hub reports for an LFS file (`X-Linked-Etag`, else a sha256 `ETag`)."""
    return normalize_sha256(headers.get("x-linked-etag")) or normalize_sha256(headers.get("etag"))


def lfs_size(headers: Mapping[str, str]) -> int | None:
    """The size the hub reports for an LFS file (`X-Linked-Size`)."""
    value = headers.get("x-linked-size", "")
    return int(value) if value.isdigit() else None
