"""The model catalog: built-in BitNet entries plus the user's TOML catalog file."""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import urlparse

from neuro_bitnet.config import Settings
from neuro_bitnet.errors import ConfigError, ModelNotFoundError
from neuro_bitnet.models.hub import normalize_sha256, resolve_url

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_MODEL_ID = "2b"

Kind = Literal["gguf", "convert", "synthetic"]
SYNTHETIC_DIR = "synthetic"  # under the models dir: the synthetic models, built on first use
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class CatalogEntry:
    """One model: where its file comes from and what it must hash to.

    `kind="gguf"`: a GGUF file to download (`url`, or `repo`+`file`+`revision`).
    `kind="convert"`: no official GGUF exists; the safetensors checkpoint in `repo` at
    `revision` is downloaded (each file verified by the hub's LFS sha256) and converted locally.
    `kind="synthetic"`: random weights with a real model's exact shapes, tokenizer and file
    format, built locally on first use (`file` names the shape: "2b" or "tiny"); for speed tests
    and trying the commands without a download: its answers are noise.
    `source_size` / `approx_size`: approximate bytes of the checkpoint and of the converted GGUF.
    """

    id: str
    name: str
    description: str = ""
    kind: Kind = "gguf"
    arch: str = ""
    params: str = ""
    aliases: tuple[str, ...] = ()
    repo: str | None = None
    file: str | None = None
    revision: str = "main"
    url: str | None = None
    size: int | None = None
    sha256: str | None = None
    source_note: str = ""
    origin: str = "built-in"
    source_size: int | None = None
    approx_size: int | None = None

    @property
    def filename(self) -> str:
        """Name of the local file."""
        if self.file:
            return PurePosixPath(self.file).name
        if self.url:
            name = PurePosixPath(urlparse(self.url).path).name
            if name:
                return name
        return f"{self.id}.gguf"

    @property
    def disk_size(self) -> int | None:
        """Bytes the model takes once installed (exact for GGUF files, estimated for conversions)."""
        return self.size if self.size is not None else self.approx_size

    @property
    def peak_disk_size(self) -> int | None:
        """Bytes needed while installing: a conversion holds the checkpoint and the GGUF at once."""
        if self.kind != "convert":
            return self.size
        if self.source_size is None or self.approx_size is None:
            return None
        return self.source_size + self.approx_size

    def download_url(self, endpoint: str) -> str:
        """Where the file is fetched from (hub URLs are built on `endpoint`)."""
        if self.url:
            return self.url
        if self.repo and self.file:
            return resolve_url(endpoint, self.repo, self.file, self.revision)
        raise ModelNotFoundError(f"model {self.id!r} has no downloadable file")

    def names(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)


BUILTIN_ENTRIES: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        id="2b",
        name="BitNet b1.58 2B-4T",
        description="Microsoft's official 2B model trained on 4T tokens (GGUF, I2_S ternary).",
        kind="gguf",
        arch="bitnet-b1.58",
        params="2.4B",
        aliases=("bitnet-b1.58-2b-4t", "2b-4t"),
        repo="microsoft/bitnet-b1.58-2B-4T-gguf",
        file="ggml-model-i2_s.gguf",
        revision="a1f2f1c765812aa8af3f6eda4a313707064bba15",
        size=1_187_801_280,
        sha256="4221b252fdd5fd25e15847adfeb5ee88886506ba50b8a34548374492884c2162",
    ),
    CatalogEntry(
        id="large",
        name="BitNet b1.58 Large",
        description="1bitLLM reproduction of BitNet b1.58, 0.7B (safetensors only, no official GGUF).",
        kind="convert",
        arch="bitnet",
        params="0.7B",
        aliases=("bitnet-b1.58-large", "0.7b"),
        repo="1bitLLM/bitnet_b1_58-large",
        source_note="converted locally from ~2.9 GB of full-precision safetensors (absmean ternary)",
        source_size=2_930_000_000,
        approx_size=270_000_000,
    ),
    CatalogEntry(
        id="3b",
        name="BitNet b1.58 3B",
        description="1bitLLM reproduction of BitNet b1.58, 3.3B (safetensors only, no official GGUF).",
        kind="convert",
        arch="bitnet",
        params="3.3B",
        aliases=("bitnet-b1.58-3b",),
        repo="1bitLLM/bitnet_b1_58-3B",
        source_note="converted locally from ~13.3 GB of full-precision safetensors (absmean ternary)",
        source_size=13_300_000_000,
        approx_size=1_010_000_000,
    ),
    CatalogEntry(
        id="8b",
        name="Llama3 8B 1.58-bit (100B tokens)",
        description="Llama-3 8B fine-tuned to ternary weights by HF1BitLLM (safetensors only).",
        kind="convert",
        arch="llama",
        params="8.0B",
        aliases=("llama3-8b-1.58",),
        repo="HF1BitLLM/Llama3-8B-1.58-100B-tokens",
        source_note="converted locally from ~3.9 GB of packed-ternary safetensors (lossless)",
        source_size=3_900_000_000,
        approx_size=3_850_000_000,
    ),
    CatalogEntry(
        id="synthetic-2b",
        name="Synthetic BitNet b1.58 2B (random weights)",
        description="The exact shapes, tokenizer and file format of 2B-4T with random ternary weights: "
                    "built locally in a minute, no download; for speed tests, its answers are noise.",
        kind="synthetic",
        arch="bitnet-b1.58",
        params="2.4B",
        aliases=("syn-2b", "synthetic"),
        file="2b",
        source_note="built locally from random weights (seed 0)",
        approx_size=1_190_000_000,
    ),
    CatalogEntry(
        id="synthetic-tiny",
        name="Synthetic BitNet b1.58 tiny (random weights)",
        description="A few-MB model with the 2B-4T structure and a truncated Llama-3 vocabulary: "
                    "for trying the commands in seconds; its answers are noise.",
        kind="synthetic",
        arch="bitnet-b1.58",
        aliases=("syn-tiny",),
        file="tiny",
        source_note="built locally from random weights (seed 0)",
    ),
)


class Catalog:
    """Entries by id, looked up by id or alias (case-insensitive)."""

    def __init__(self, entries: list[CatalogEntry]) -> None:
        self._entries: dict[str, CatalogEntry] = {}
        self._names: dict[str, str] = {}
        for entry in entries:
            self._add(entry)

    def _add(self, entry: CatalogEntry) -> None:
        old = self._entries.pop(entry.id, None)
        if old is not None:  # a user entry replaces a built-in with the same id
            for name in old.names():
                self._names.pop(name.lower(), None)
        for name in entry.names():
            owner = self._names.get(name.lower())
            if owner is not None and owner != entry.id:
                raise ConfigError(
                    f"{entry.origin}: model name {name!r} of {entry.id!r} is already used by {owner!r}"
                )
            self._names[name.lower()] = entry.id
        self._entries[entry.id] = entry

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) is not None

    def find(self, name: str) -> CatalogEntry | None:
        """The entry with this id or alias, or None."""
        entry_id = self._names.get(name.strip().lower())
        return self._entries[entry_id] if entry_id else None

    def get(self, name: str) -> CatalogEntry:
        """The entry with this id or alias; ModelNotFoundError naming close matches otherwise."""
        entry = self.find(name)
        if entry is not None:
            return entry
        close = difflib.get_close_matches(name.lower(), list(self._names), n=1)
        hint = f" Did you mean {self._names[close[0]]!r}?" if close else ""
        known = ", ".join(self._entries)
        raise ModelNotFoundError(
            f"unknown model {name!r}.{hint} Known models: {known} (see `neuro model list`), "
            "or pass a path to a local .gguf file."
        )


_ALLOWED_KEYS = {
    "id", "name", "description", "url", "repo", "file", "revision", "sha256", "size",
    "arch", "params", "aliases", "kind", "source_size", "approx_size",
}


def _entry_from_toml(raw: Any, where: str, origin: str) -> CatalogEntry:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: each model must be a table")
    unknown = set(raw) - _ALLOWED_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_ALLOWED_KEYS))}"
        )
    for key, value in raw.items():
        if key in ("size", "source_size", "approx_size"):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{where}: {key} must be a positive whole number of bytes")
        elif key == "aliases":
            if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
                raise ConfigError(f"{where}: aliases must be a list of strings")
        elif not isinstance(value, str):
            raise ConfigError(f"{where}: {key} must be a string")
    model_id = raw.get("id", "").strip().lower()
    if not _ID.match(model_id):
        raise ConfigError(f"{where}: id must be lowercase letters, digits, '.', '_' or '-', got {raw.get('id')!r}")
    where = f"{where} ({model_id})"
    kind = raw.get("kind", "gguf")
    if kind not in ("gguf", "convert"):
        raise ConfigError(f"{where}: kind must be 'gguf' or 'convert', got {kind!r}")
    if kind == "convert":
        return _convert_entry_from_toml(raw, where, model_id, origin)
    url, repo, file = raw.get("url"), raw.get("repo"), raw.get("file")
    if url and (repo or file):
        raise ConfigError(f"{where}: give either url or repo+file, not both")
    if url and urlparse(url).scheme not in ("http", "https"):
        raise ConfigError(f"{where}: url must start with http:// or https://")
    if not url and not (repo and file):
        raise ConfigError(f"{where}: needs either url or repo and file")
    if file and (file.startswith("/") or ".." in PurePosixPath(file).parts):
        raise ConfigError(f"{where}: file must be a relative path inside the repo")
    sha256 = None
    if "sha256" in raw:
        sha256 = normalize_sha256(raw["sha256"])
        if sha256 is None:
            raise ConfigError(f"{where}: sha256 must be 64 hex digits")
    elif url:
        raise ConfigError(f"{where}: a url entry needs sha256 (only hub repo files carry their own hash)")
    return CatalogEntry(
        id=model_id,
        name=raw.get("name", model_id),
        description=raw.get("description", ""),
        kind="gguf",
        arch=raw.get("arch", ""),
        params=raw.get("params", ""),
        aliases=tuple(a.strip().lower() for a in raw.get("aliases", [])),
        repo=repo,
        file=file,
        revision=raw.get("revision", "main"),
        url=url,
        size=raw.get("size"),
        sha256=sha256,
        origin=origin,
    )


def _convert_entry_from_toml(raw: dict[str, Any], where: str, model_id: str, origin: str) -> CatalogEntry:
    """A `kind = "convert"` entry: a safetensors checkpoint repo converted locally."""
    if not raw.get("repo") or raw.get("url") or raw.get("file") or raw.get("sha256") or raw.get("size"):
        raise ConfigError(f"{where}: a convert entry needs repo (and revision), not url, file, sha256 or size")
    return CatalogEntry(
        id=model_id,
        name=raw.get("name", model_id),
        description=raw.get("description", ""),
        kind="convert",
        arch=raw.get("arch", ""),
        params=raw.get("params", ""),
        aliases=tuple(a.strip().lower() for a in raw.get("aliases", [])),
        repo=raw["repo"],
        revision=raw.get("revision", "main"),
        source_size=raw.get("source_size"),
        approx_size=raw.get("approx_size"),
        origin=origin,
    )


def read_user_catalog(path: Path) -> list[CatalogEntry]:
    """Entries from a TOML file with `[[models]]` tables (or `[models.ID]` tables)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read catalog {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"invalid TOML in catalog {path}: {exc}") from None
    models = data.get("models", [])
    if isinstance(models, dict):
        models = [{"id": key, **value} if isinstance(value, dict) else value for key, value in models.items()]
    if not isinstance(models, list):
        raise ConfigError(f"{path}: `models` must be an array of tables ([[models]])")
    extra = set(data) - {"models"}
    if extra:
        raise ConfigError(f"{path}: unknown top-level key(s) {', '.join(sorted(extra))}; use [[models]] tables")
    return [_entry_from_toml(raw, f"{path} [models #{i + 1}]", str(path)) for i, raw in enumerate(models)]


def load_catalog(source: Settings | Path | str | None = None) -> Catalog:
    """Built-in entries plus the user catalog (a user entry with a built-in id replaces it).

    `source`: Settings (uses `catalog_path`; a missing file is an error only when it was set
    explicitly), a path to a TOML file (must exist), or None (load settings first).
    """
    if source is None:
        from neuro_bitnet.config import load_settings

        source = load_settings()
    if isinstance(source, Settings):
        path, required = source.catalog_path, source.source("catalog_path") != "default"
    else:
        path, required = Path(source).expanduser(), True
    entries = list(BUILTIN_ENTRIES)
    if path.is_file():
        entries += read_user_catalog(path)
    elif required:
        raise ConfigError(f"catalog file {path} does not exist (NEURO_BITNET_CATALOG)")
    return Catalog(entries)
