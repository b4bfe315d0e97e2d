"""`neuro model download large|8b` against the loopback hub serving tiny checkpoints under the
real repo paths: fetch (verified, resumable), convert, load-check, clean up."""

from __future__ import annotations

import subprocess
from pathlib import Path

from neuro_bitnet.engine.gguf import GGUFFile
from neuro_bitnet.models.catalog import BUILTIN_ENTRIES

from support.hubserver import HubServer, run_cli, write_catalog

HF = Path(__file__).resolve().parent.parent / "fixtures" / "hf"
ENTRIES = {e.id: e for e in BUILTIN_ENTRIES}
REFERENCE_FILES = ("reference.npz", "tokenizer_reference.json")


def serve(hub: HubServer, repo: str, folder: Path, revision: str = "main", **skip: bool) -> dict[str, object]:
    files = {}
    for path in sorted(folder.iterdir()):
        if path.name not in REFERENCE_FILES and not skip.get(path.name):
            files[path.name] = hub.add_file(repo, path.name, path.read_bytes(), revision=revision)
    return files


def run(hub: HubServer, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not (root / "models.toml").exists():
        write_catalog(root / "models.toml")  # the built-in entries only
    return run_cli(hub, root, *args)


def model_dir(root: Path, model_id: str) -> Path:
    return root / "models" / model_id


def test_download_large_converts_and_cleans_up(hub: HubServer, tmp_path: Path) -> None:
    serve(hub, ENTRIES["large"].repo, HF / "1bitllm")
    result = run(hub, tmp_path, "model", "download", "large")
    assert result.returncode == 0, result.stderr
    gguf = model_dir(tmp_path, "large") / "large.gguf"
    assert result.stdout.strip().endswith(str(gguf))
    assert "converting large" in result.stderr and "model.safetensors" in result.stderr
    assert not (model_dir(tmp_path, "large") / "source").exists()  # sources deleted by default
    with GGUFFile(gguf) as g:
        assert g.metadata["general.architecture"] == "bitnet"
    listing = run(hub, tmp_path, "model", "list")
    line = next(ln for ln in listing.stdout.splitlines() if ln.startswith("large"))
    assert "convert" in line and "downloaded" in line
    info = run(hub, tmp_path, "model", "info", "large", "--verify")
    assert info.returncode == 0 and "OK" in info.stdout
    again = run(hub, tmp_path, "model", "download", "large")
    assert again.returncode == 0 and "already downloaded" in again.stderr
    removed = run(hub, tmp_path, "model", "remove", "large", "--yes")
    assert removed.returncode == 0 and not gguf.exists()


def test_download_8b_sharded_keep_source_and_redirects(hub: HubServer, tmp_path: Path) -> None:
    hub.faults.redirect = True  # LFS headers on the 302 only, like the real hub
    serve(hub, ENTRIES["8b"].repo, HF / "llama-1.58")
    result = run(hub, tmp_path, "model", "download", "8b", "--keep-source")
    assert result.returncode == 0, result.stderr
    source = model_dir(tmp_path, "8b") / "source"
    assert (source / "model-00002-of-00002.safetensors").is_file()
    assert (source / "tokenizer.json").is_file() and (source / "model.safetensors.index.json").is_file()
    with GGUFFile(model_dir(tmp_path, "8b") / "8b.gguf") as g:
        assert g.metadata["general.architecture"] == "llama"
        assert g.metadata["neuro_bitnet.rope_style"] == "normal"
    removed = run(hub, tmp_path, "model", "remove", "8b", "--yes")
    assert removed.returncode == 0 and not model_dir(tmp_path, "8b").exists()


def test_interrupted_shard_resumes(hub: HubServer, tmp_path: Path) -> None:
    serve(hub, ENTRIES["large"].repo, HF / "1bitllm")
    hub.faults.cut_after = 300_000  # only the shard is that large
    first = run(hub, tmp_path, "model", "download", "large")
    hub.faults.cut_after = None
    assert first.returncode == 4, first.stderr
    assert "resume" in first.stderr and "Traceback" not in first.stderr
    status = run(hub, tmp_path, "model", "list")
    assert "partial" in next(ln for ln in status.stdout.splitlines() if ln.startswith("large"))
    second = run(hub, tmp_path, "model", "download", "large")
    assert second.returncode == 0, second.stderr
    ranges = [r.headers.get("range") for r in hub.gets() if r.path.endswith("model.safetensors")]
    assert ranges[-1] and ranges[-1].startswith("bytes=")  # continued, not restarted
    assert (model_dir(tmp_path, "large") / "large.gguf").is_file()


def test_corrupt_shard_is_refused(hub: HubServer, tmp_path: Path) -> None:
    serve(hub, ENTRIES["3b"].repo, HF / "1bitllm-ff320")
    hub.faults.wrong_bytes = True
    result = run(hub, tmp_path, "model", "download", "3b")
    assert result.returncode == 4
    assert "checksum mismatch" in result.stderr and "Traceback" not in result.stderr
    assert not (model_dir(tmp_path, "3b") / "3b.gguf").exists()


def test_missing_weights_are_reported(hub: HubServer, tmp_path: Path) -> None:
    serve(hub, ENTRIES["large"].repo, HF / "1bitllm", **{"model.safetensors": True})
    result = run(hub, tmp_path, "model", "download", "large")
    assert result.returncode == 4 and "404" in result.stderr


def test_user_catalog_convert_entry(hub: HubServer, tmp_path: Path) -> None:
    serve(hub, "someone/tiny-bitnet", HF / "microsoft-bf16", revision="v1")
    write_catalog(tmp_path / "models.toml", {"id": "tiny", "kind": "convert", "repo": "someone/tiny-bitnet",
                                             "revision": "v1", "approx_size": 250000})
    listing = run(hub, tmp_path, "model", "list")
    assert "convert" in next(ln for ln in listing.stdout.splitlines() if ln.startswith("tiny"))
    result = run(hub, tmp_path, "model", "download", "tiny")
    assert result.returncode == 0, result.stderr
    assert (model_dir(tmp_path, "tiny") / "tiny.gguf").is_file()


def test_list_json_reports_install_kind(hub: HubServer, tmp_path: Path) -> None:
    import json

    data = json.loads(run(hub, tmp_path, "model", "list", "--json").stdout)
    kinds = {m["id"]: (m["install"], m["disk_estimate"], m["peak_disk_estimate"]) for m in data}
    assert kinds["2b"][0] == "download"
    for model_id in ("large", "3b", "8b"):
        install, disk, peak = kinds[model_id]
        assert install == "convert" and disk and peak > disk
