"""`neuro model`: list, download, remove and inspect models."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from neuro_bitnet.cli.console import confirm, format_size, print_json, print_table, status
from neuro_bitnet.config import load_settings
from neuro_bitnet.errors import NeuroError
from neuro_bitnet.models.catalog import DEFAULT_MODEL_ID, CatalogEntry
from neuro_bitnet.models.manager import ModelManager, ModelStatus
from neuro_bitnet.models.store import sha256_file


def _manager(ctx: click.Context) -> ModelManager:
    return ModelManager(load_settings(models_dir=ctx.obj.get("models_dir")))


def _source(entry: CatalogEntry) -> str:
    if entry.kind == "synthetic":
        return entry.source_note
    if entry.url:
        return entry.url
    if entry.file:
        return f"{entry.repo}/{entry.file}@{entry.revision}"
    return f"{entry.repo}@{entry.revision} (safetensors, converted locally)"


def _how(entry: CatalogEntry) -> str:
    """How the model gets onto the disk: a direct GGUF download or a local conversion."""
    return {"convert": "convert", "synthetic": "build"}.get(entry.kind, "download")


def _disk_text(entry: CatalogEntry) -> str:
    """Expected disk use: the GGUF (estimated for conversions) and the peak while converting."""
    if entry.kind == "synthetic":
        return f"~{format_size(entry.disk_size)}" if entry.disk_size else "small"
    if entry.kind != "convert":
        return format_size(entry.size) if entry.size else "?"
    if entry.disk_size is None:
        return "?"
    peak = f" (peak ~{format_size(entry.peak_disk_size)})" if entry.peak_disk_size else ""
    return f"~{format_size(entry.disk_size)}{peak}"


def _state_text(st: ModelStatus) -> str:
    if st.entry.kind == "synthetic":
        return "built" if st.state == "verified" else "built on first use"
    if st.state == "verified":
        return "downloaded"
    if st.state == "partial":
        total = st.entry.size
        pct = f" {st.partial_bytes * 100 // total}%" if total else f" {format_size(st.partial_bytes)}"
        return f"partial{pct}"
    if st.state == "convert":
        return "needs conversion"
    if st.state == "unverified":
        return "unverified"
    return "not downloaded"


def _status_json(st: ModelStatus) -> dict[str, Any]:
    e = st.entry
    return {
        "id": e.id,
        "name": e.name,
        "aliases": list(e.aliases),
        "description": e.description,
        "kind": e.kind,
        "arch": e.arch,
        "params": e.params,
        "size": e.size,
        "install": _how(e),
        "disk_estimate": e.disk_size,
        "peak_disk_estimate": e.peak_disk_size,
        "sha256": e.sha256,
        "source": _source(e),
        "origin": e.origin,
        "default": e.id == DEFAULT_MODEL_ID,
        "state": st.state,
        "downloaded": st.downloaded,
        "path": str(st.path) if st.state in ("verified", "unverified") else None,
        "size_on_disk": st.size_on_disk,
        "recorded_sha256": st.recorded_sha256,
        "verified_by": st.verified_by,
        "partial_bytes": st.partial_bytes,
    }


@click.group("model")
@click.option(
    "--models-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where models are stored (default: NEURO_BITNET_MODELS_DIR or the user cache dir).",
)
@click.pass_context
def command(ctx: click.Context, models_dir: Path | None) -> None:
    """List, download, remove and inspect models."""
    ctx.obj = {"models_dir": models_dir}


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    """Show catalog models and whether they are downloaded."""
    mm = _manager(ctx)
    statuses = [mm.status(e) for e in mm.entries()]
    if as_json:
        print_json([_status_json(st) for st in statuses])
        return
    rows = []
    for st in statuses:
        e = st.entry
        name = e.name + (" (default)" if e.id == DEFAULT_MODEL_ID else "")
        on_disk = st.state in ("verified", "unverified")
        rows.append([e.id, name, e.params or "-", _how(e), _disk_text(e), _state_text(st),
                     str(st.path) if on_disk else "-"])
    print_table(["ID", "NAME", "PARAMS", "SOURCE", "DISK", "STATUS", "PATH"], rows)


@command.command("download")
@click.argument("model_id", default=DEFAULT_MODEL_ID)
@click.option("--force", is_flag=True, help="Download again even if a verified copy exists.")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--keep-source", is_flag=True,
              help="For models converted locally: keep the downloaded safetensors checkpoint.")
@click.pass_context
def download_cmd(ctx: click.Context, model_id: str, force: bool, assume_yes: bool, keep_source: bool) -> None:
    """Download a model (default: 2b), verify its sha256 and print its path.

    Models without an official GGUF (large, 3b, 8b) are downloaded as safetensors, each file
    verified by the hub's sha256, converted to GGUF, checked to load, and the checkpoint deleted
    (unless --keep-source). An interrupted download resumes where it stopped on the next run.
    """
    mm = _manager(ctx)
    entry = mm.entry(model_id)
    before = mm.status(entry)
    if force and before.downloaded:
        if not confirm(
            f"Download {entry.id} ({_disk_text(entry)}) again and replace the verified copy?",
            assume_yes=assume_yes,
            refuse_hint=f"{entry.id} is already downloaded; pass --yes with --force to download it again",
        ):
            sys.exit(1)
    if before.downloaded and not force:
        status(f"{entry.id} is already downloaded and verified ({before.verified_by})")
        click.echo(before.path)
        return
    try:
        path = mm.download(entry, force=force, keep_source=keep_source)
    except KeyboardInterrupt:  # the manager already said how to resume
        sys.exit(130)
    after = mm.status(entry)
    status(f"{entry.id}: sha256 {after.recorded_sha256} verified ({after.verified_by})", style="green")
    click.echo(path)


@command.command("remove")
@click.argument("model_id")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def remove_cmd(ctx: click.Context, model_id: str, assume_yes: bool) -> None:
    """Delete a downloaded model (and any partial download)."""
    mm = _manager(ctx)
    entry = mm.entry(model_id)
    st = mm.status(entry)
    if st.size_on_disk == 0 and st.partial_bytes == 0 and not mm.files(entry).record.exists():
        status(f"{entry.id} is not downloaded; nothing to remove")
        return
    size = format_size(st.size_on_disk + st.partial_bytes)
    if not confirm(
        f"Remove {entry.id} ({size}) from {mm.files(entry).dir}?",
        assume_yes=assume_yes,
        refuse_hint=f"not removing {entry.id} without confirmation; pass --yes",
    ):
        sys.exit(1)
    removed = mm.remove(entry)
    status(f"removed {entry.id}: {len(removed)} file(s), {size} freed")


def _entry_info(mm: ModelManager, entry: CatalogEntry, verify: bool) -> dict[str, Any]:
    info = _status_json(mm.status(entry))
    info["files"] = [
        {"path": str(p), "size": p.stat().st_size} for p in mm.files(entry).all() if p.is_file()
    ]
    info["revision"] = entry.revision if entry.repo else None
    info["note"] = entry.source_note or None
    if verify:
        ok, actual = mm.verify(entry)
        info["verify"] = {"ok": ok, "sha256": actual}
    return info


def _print_entry_info(info: dict[str, Any]) -> None:
    pinned = info["sha256"] or ("none pinned (the hub's LFS sha256 is used)" if info["kind"] == "gguf" else "-")
    state = {
        "verified": (f"built ({info['path']})" if info["kind"] == "synthetic"
                     else f"downloaded, verified ({info['verified_by']})"),
        "unverified": "present but NOT verified (run `neuro model download` to check it)",
        "partial": f"partial download, {format_size(info['partial_bytes'])} so far",
        "absent": "built on first use" if info["kind"] == "synthetic" else "not downloaded",
        "convert": "not downloaded; `neuro model download` converts it from the safetensors checkpoint",
    }[info["state"]]
    rows = [
        ("id", info["id"] + (" (default)" if info["default"] else "")),
        ("name", info["name"]),
        ("aliases", ", ".join(info["aliases"]) or "-"),
        ("description", info["description"] or "-"),
        ("architecture", info["arch"] or "-"),
        ("parameters", info["params"] or "-"),
        ("source", info["source"]),
        ("catalog", info["origin"]),
        ("install", {"convert": "converted locally from safetensors", "build": "built locally"}.get(
            info["install"], "GGUF download")),
        ("expected size", f"{format_size(info['size'])} ({info['size']} bytes)" if info["size"]
         else (f"~{format_size(info['disk_estimate'])} (estimate)" if info["disk_estimate"] else "unknown")),
        ("expected sha256", pinned),
        ("status", state),
        ("path", info["path"] or "-"),
        ("recorded sha256", info["recorded_sha256"] or "-"),
    ]
    if info["note"]:
        rows.append(("note", info["note"]))
    for f in info["files"]:
        rows.append(("file", f"{f['path']} ({format_size(f['size'])})"))
    if "verify" in info:
        verdict = "OK" if info["verify"]["ok"] else "MISMATCH"
        rows.append(("re-hash", f"{verdict}: {info['verify']['sha256']}"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key.ljust(width)}  {value}")


def _print_gguf_info(info: dict[str, Any]) -> None:
    arch = info["architecture"] or "-"
    if info["file_architecture"] != info["architecture"]:
        arch += f" (the file says {info['file_architecture']!r})"
    if not info["supported"]:
        arch += " (not supported by the engine)"
    rows = [
        ("path", info["path"]),
        ("size", f"{format_size(info['size'])} ({info['size']} bytes)"),
        ("architecture", arch),
        ("name", info["name"] or "-"),
        ("context", f"{info['context_length']} tokens" if info["context_length"] else "-"),
        ("quantization", info["quantization"] + (f" (file_type {info['file_type']})"
                                                 if info["file_type"] is not None else "")),
        ("chat format", info["chat_format"]["description"]),
    ]
    if "sha256" in info:
        rows.append(("sha256", info["sha256"]))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key.ljust(width)}  {value}")


def _cache_info(mm: ModelManager) -> dict[str, Any]:
    cache = mm.cache_info()
    return {
        "models_dir": str(cache.models_dir),
        "models_dir_source": mm.settings.source("models_dir"),
        "exists": cache.exists,
        "disk_use": cache.total_bytes,
        "free": cache.free_bytes,
        "files": [{"path": str(f.path), "size": f.size} for f in cache.files],
        "models": [_status_json(mm.status(e)) for e in mm.entries()],
    }


def _print_cache_info(info: dict[str, Any]) -> None:
    click.echo(f"models dir  {info['models_dir']} ({info['models_dir_source']})")
    free = f", {format_size(info['free'])} free" if info["free"] is not None else ""
    click.echo(f"disk use    {format_size(info['disk_use'])} in {len(info['files'])} file(s){free}")
    click.echo("models")
    for m in info["models"]:
        if m["state"] in ("verified", "unverified", "partial"):
            detail = m["verified_by"] or m["state"]
            sha = f"sha256 {m['recorded_sha256']}" if m["recorded_sha256"] else ""
            click.echo(f"  {m['id']}: {detail} {format_size(m['size_on_disk'] or m['partial_bytes'])} {sha}".rstrip())
    if not any(m["state"] in ("verified", "unverified", "partial") for m in info["models"]):
        click.echo("  (none downloaded; try `neuro model download`)")
    click.echo("files")
    for f in info["files"]:
        click.echo(f"  {f['path']}  {format_size(f['size'])}")
    if not info["files"]:
        click.echo("  (none)")


@command.command("info")
@click.argument("model_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--verify", is_flag=True, help="Re-hash the file and compare with the expected sha256.")
@click.pass_context
def info_cmd(ctx: click.Context, model_id: str | None, as_json: bool, verify: bool) -> None:
    """Show the models directory, or one model's files and verification state."""
    mm = _manager(ctx)
    if model_id is None:
        info = _cache_info(mm)
        if as_json:
            print_json(info)
        else:
            _print_cache_info(info)
        return
    resolved = mm.resolve(model_id)
    if isinstance(resolved, Path):
        from neuro_bitnet.engine.file_info import gguf_summary

        info = {"path": str(resolved), "size": resolved.stat().st_size, "kind": "local file",
                **gguf_summary(resolved)}  # EngineError (exit 5) if it is not a readable GGUF
        if verify:
            info["sha256"] = sha256_file(resolved)
        if as_json:
            print_json(info)
        else:
            _print_gguf_info(info)
        return
    info = _entry_info(mm, resolved, verify and mm.status(resolved).size_on_disk > 0)
    if as_json:
        print_json(info)
    else:
        _print_entry_info(info)
    if verify and info["state"] not in ("verified", "unverified"):
        raise NeuroError(f"{resolved.id} is not downloaded; nothing to verify")
    if "verify" in info and not info["verify"]["ok"]:
        raise NeuroError(f"{resolved.id}: the file on disk does not match its expected sha256")


@command.command("convert")
@click.argument("hf_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "-o", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The GGUF file to write.")
@click.option("--arch", type=click.Choice(["auto", "bitnet", "bitnet-b1.58", "llama"]), default="auto",
              show_default=True, help="GGUF architecture (auto: from config.json).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Load the result in the engine and run one token.")
def convert_cmd(hf_dir: Path, out: Path, arch: str, force: bool, verify: bool) -> None:
    """Convert a local Hugging Face BitNet checkpoint (safetensors) to GGUF.

    Reads 1bitLLM BitnetForCausalLM (full-precision weights, quantized to ternary with absmean
    as trained), Microsoft BitNetForCausalLM (packed or bf16 master weights) and
    LlamaForCausalLM with quant_method bitnet. Memory stays bounded: one slab at a time.
    """
    import time

    from neuro_bitnet.models.convert import ConvertError, convert_checkpoint
    from neuro_bitnet.models.convert.verify import check_loads
    from neuro_bitnet.models.progress import make_progress

    if out.exists() and not force:
        raise ConvertError(f"{out} exists; pass --force to overwrite it")
    start = time.monotonic()
    notes: list[str] = []
    result = convert_checkpoint(hf_dir, out, arch=arch, progress=make_progress(verb="converting"), notes=notes)
    for note in notes:
        status(f"note: {note}")
    if verify:
        try:
            check_loads(out)
        except ConvertError:
            out.unlink(missing_ok=True)
            raise
    layout = result.layout
    status(
        f"converted {layout.source} checkpoint to {layout.arch} GGUF: {result.n_tensors} tensors, "
        f"{format_size(result.size)} in {time.monotonic() - start:.1f}s"
        + (", loads and runs" if verify else ""),
        style="green",
    )
    click.echo(out)
