"""Downloads are bounded: in size, in disk use and in time without progress (loopback hub)."""

from __future__ import annotations

import hashlib
import random
from collections import namedtuple
from pathlib import Path

import pytest

from neuro_bitnet.config import load_settings
from neuro_bitnet.errors import DownloadError
from neuro_bitnet.models import download as download_mod
from neuro_bitnet.models.download import Limits, download_file
from neuro_bitnet.models.manager import ModelManager

from support.hubserver import HubServer, tiny_model

SIZE = 256 * 1024
usage = namedtuple("usage", "total used free")


def unsized_file(hub: HubServer, size: int = SIZE):
    """A file the hub serves without any length (no Content-Length, no LFS size)."""
    data = random.Random(5).randbytes(size)
    hub.faults.no_length = True
    return hub.add_file("test/unsized", "unsized.gguf", data, lfs=False)


def test_a_file_without_a_length_downloads_completely(hub: HubServer, tmp_path: Path) -> None:
    f = unsized_file(hub)
    result = download_file(hub.file_url(f), tmp_path / "unsized.gguf", sha256=f.sha256)
    assert result.path.read_bytes() == f.data
    assert "content-length" not in {k.lower() for k in hub.requests[-1].headers}


def test_a_server_that_never_stops_is_cut_at_the_limit_and_the_part_deleted(hub: HubServer, tmp_path: Path) -> None:
    f = unsized_file(hub)
    hub.faults.extra_bytes = 8 * SIZE  # the stand-in for "forever"
    dest = tmp_path / "unsized.gguf"
    with pytest.raises(DownloadError, match=r"sent more than 524.3 kB without saying the file's size"):
        download_file(hub.file_url(f), dest, sha256=f.sha256, limits=Limits(max_bytes=2 * SIZE))
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_without_a_length_the_catalog_size_is_the_cap(hub: HubServer, env: Path) -> None:
    tiny_model(hub, env, SIZE)  # the catalog says SIZE bytes
    hub.faults.no_length, hub.faults.extra_bytes = True, SIZE
    mm = ModelManager(load_settings())
    with pytest.raises(DownloadError, match=f"sent more than the expected {SIZE} bytes"):
        mm.download("tiny", progress=False)
    assert not mm.files(mm.entry("tiny")).part.exists()


def test_free_space_is_checked_as_a_file_of_unknown_size_grows(hub: HubServer, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    f = unsized_file(hub)
    hub.faults.chunk_size = 8 * 1024
    dest = tmp_path / "unsized.gguf"
    part = dest.with_name(dest.name + ".part")

    def disk_usage(path):  # the disk "fills up" once the download holds 64 kB
        held = part.stat().st_size if part.exists() else 0
        return usage(10**12, 0, 10**12 if held < 64 * 1024 else 1000)

    monkeypatch.setattr(download_mod.shutil, "disk_usage", disk_usage)
    limits = Limits(reserve_bytes=10_000, space_check_bytes=16 * 1024)
    with pytest.raises(DownloadError, match="not enough disk space .*fewer than 10.0 kB left, 1.0 kB free"):
        download_file(hub.file_url(f), dest, sha256=f.sha256, limits=limits)
    kept = part.stat().st_size
    assert 64 * 1024 <= kept < SIZE  # stopped part-way, at a check after the disk filled; kept to resume
    assert not dest.exists()


def test_a_trickling_server_counts_as_stalled_and_keeps_the_part(hub: HubServer, tmp_path: Path) -> None:
    data = random.Random(6).randbytes(SIZE)
    f = hub.add_file("test/slow", "slow.gguf", data, lfs=False)
    hub.faults.chunk_size, hub.faults.throttle = 16, 0.05  # at most 320 bytes/s, far below the minimum
    dest = tmp_path / "slow.gguf"
    limits = Limits(stall_seconds=1.0, min_rate=10_000)
    with pytest.raises(DownloadError, match=r"the transfer stalled: .* in the last \d+ s \(under 10.0 kB/s\).*resume"):
        download_file(hub.file_url(f), dest, sha256=hashlib.sha256(data).hexdigest(), timeout=30, limits=limits)
    assert 0 < dest.with_name(dest.name + ".part").stat().st_size < SIZE


def test_a_slow_but_steady_transfer_is_not_a_stall(hub: HubServer, tmp_path: Path) -> None:
    f = tiny_model(hub, tmp_path, SIZE)
    hub.faults.chunk_size, hub.faults.throttle = 16 * 1024, 0.05
    limits = Limits(stall_seconds=0.2, min_rate=1)  # any progress at all is enough
    result = download_file(hub.file_url(f), tmp_path / "t.gguf", sha256=f.sha256, limits=limits)
    assert result.path.read_bytes() == f.data
