"""Downloads through the library API against the loopback hub: resume, verify, fail clearly."""

from __future__ import annotations

import hashlib
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from neuro_bitnet.config import load_settings
from neuro_bitnet.errors import DownloadError
from neuro_bitnet.models import download as download_mod
from neuro_bitnet.models.manager import ModelManager

from support.hubserver import HubServer, tiny_model, write_catalog

SIZE = 256 * 1024


def manager(**overrides: object) -> ModelManager:
    return ModelManager(load_settings(**overrides))


def files(mm: ModelManager, model_id: str = "tiny"):
    return mm.files(mm.entry(model_id))


def test_download_verifies_records_and_moves_into_place(hub: HubServer, env: Path) -> None:
    f = tiny_model(hub, env)
    mm = manager()
    assert mm.local_path(mm.entry("tiny")) is None
    path = mm.download("tiny", progress=False)
    assert path == env / "models" / "tiny" / "tiny.gguf"
    assert path.read_bytes() == f.data
    assert not files(mm).part.exists()
    assert files(mm).record.read_text() == f"{f.sha256}  tiny.gguf\n"
    st = mm.status(mm.entry("tiny"))
    assert st.downloaded and st.verified_by == "pinned sha256" and st.recorded_sha256 == f.sha256
    assert mm.local_path(mm.entry("tiny")) == path
    [get] = hub.gets()
    assert get.path == "/test/tiny/resolve/v1/tiny.gguf" and "range" not in get.headers
    mm.download("tiny", progress=False)  # already verified: no request at all
    assert len(hub.gets()) == 1


def test_cut_connection_leaves_a_part_that_the_next_run_resumes(hub: HubServer, env: Path) -> None:
    f = tiny_model(hub, env, SIZE)
    hub.faults.cut_after, hub.faults.cut_times = 100_000, 1
    mm = manager()
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        mm.download("tiny", progress=False)
    part = files(mm).part
    kept = part.stat().st_size
    assert 0 < kept <= 100_000
    assert not files(mm).model.exists()
    assert mm.status(mm.entry("tiny")).state == "partial"
    path = manager().download("tiny", progress=False)
    first, second = hub.gets()
    assert second.headers["range"] == f"bytes={kept}-" and second.status == 206
    assert path.read_bytes() == f.data and not part.exists()


def test_retries_resume_within_one_run(hub: HubServer, env: Path) -> None:
    f = tiny_model(hub, env, SIZE)
    hub.faults.cut_after, hub.faults.cut_times = 50_000, 2
    path = manager(retries=2).download("tiny", progress=False)
    assert path.read_bytes() == f.data
    gets = hub.gets()
    assert len(gets) == 3 and all("range" in g.headers for g in gets[1:])


def test_server_ignoring_range_means_a_clean_full_download(hub: HubServer, env: Path) -> None:
    f = tiny_model(hub, env, SIZE)
    hub.faults.cut_after, hub.faults.cut_times = 100_000, 1
    with pytest.raises(DownloadError):
        manager().download("tiny", progress=False)
    hub.faults.ignore_range = True
    path = manager().download("tiny", progress=False)
    last = hub.gets()[-1]
    assert "range" in last.headers and last.status == 200
    assert hashlib.sha256(path.read_bytes()).hexdigest() == f.sha256


def test_checksum_mismatch_deletes_the_partial_and_names_both_hashes(hub: HubServer, env: Path) -> None:
    f = tiny_model(hub, env)
    hub.faults.wrong_bytes = True
    corrupted = bytes(b ^ 0x5A for b in f.data[:64]) + f.data[64:]
    mm = manager()
    with pytest.raises(DownloadError) as info:
        mm.download("tiny", progress=False)
    message = str(info.value)
    assert f.sha256 in message and hashlib.sha256(corrupted).hexdigest() in message
    assert not files(mm).part.exists() and not files(mm).model.exists()
    assert not files(mm).record.exists()


def test_a_pin_that_disagrees_with_the_hub_stops_before_the_body(hub: HubServer, env: Path) -> None:
    f = hub.add_file("test/tiny", "tiny.gguf", b"x" * 1000, revision="v1")
    write_catalog(env / "models.toml", {"id": "tiny", "repo": "test/tiny", "file": "tiny.gguf",
                                        "revision": "v1", "sha256": "0" * 64})
    mm = manager()
    with pytest.raises(DownloadError, match=f"server reports sha256 {f.sha256} but the catalog pins {'0' * 64}"):
        mm.download("tiny", progress=False)
    assert not files(mm).part.exists()


def test_builtin_2b_uses_the_pinned_revision_and_refuses_another_file(hub: HubServer, env: Path) -> None:
    write_catalog(env / "models.toml")
    hub.add_file("microsoft/bitnet-b1.58-2B-4T-gguf", "ggml-model-i2_s.gguf", b"not the model",
                 revision="a1f2f1c765812aa8af3f6eda4a313707064bba15")
    with pytest.raises(DownloadError, match="refusing to download a different file"):
        manager().download("2b", progress=False)
    [get] = hub.gets()
    revision = "a1f2f1c765812aa8af3f6eda4a313707064bba15"
    assert get.path == f"/microsoft/bitnet-b1.58-2B-4T-gguf/resolve/{revision}/ggml-model-i2_s.gguf"


@pytest.mark.parametrize("redirect", [False, True])
def test_without_a_pin_the_hub_lfs_hash_is_used_and_recorded(hub: HubServer, env: Path, redirect: bool) -> None:
    f = tiny_model(hub, env, pin=False)
    hub.faults.redirect = redirect  # the real hub: LFS headers on the 302, bytes from a CDN
    mm = manager()
    mm.download("tiny", progress=False)
    st = mm.status(mm.entry("tiny"))
    assert st.downloaded and st.verified_by == "hub LFS sha256" and st.recorded_sha256 == f.sha256
    if redirect:
        paths = [g.path for g in hub.gets()]
        assert paths == ["/test/tiny/resolve/v1/tiny.gguf", "/cdn/test/tiny/resolve/v1/tiny.gguf"]


def test_without_a_pin_a_wrong_body_fails_against_the_lfs_hash(hub: HubServer, env: Path) -> None:
    f = tiny_model(hub, env, pin=False)
    hub.faults.wrong_bytes = True
    with pytest.raises(DownloadError, match=f"expected hub \\(LFS\\) sha256 {f.sha256}"):
        manager().download("tiny", progress=False)


def test_no_pin_and_no_hub_hash_is_refused(hub: HubServer, env: Path) -> None:
    tiny_model(hub, env, pin=False, lfs=False)
    mm = manager()
    with pytest.raises(DownloadError, match="no sha256 to verify"):
        mm.download("tiny", progress=False)
    assert not files(mm).part.exists()


def test_token_is_sent_as_bearer_and_401_mentions_hf_token(hub: HubServer, env: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_model(hub, env)
    hub.faults.require_token = "hf_test"
    with pytest.raises(DownloadError, match="HTTP 401.*set HF_TOKEN"):
        manager().download("tiny", progress=False)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(DownloadError, match="HF_TOKEN is set but was refused"):
        manager().download("tiny", progress=False)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    manager().download("tiny", progress=False)
    assert hub.gets()[-1].headers["authorization"] == "Bearer hf_test"


def test_token_is_not_sent_to_a_third_party_url(hub: HubServer, env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = hub.add_file("other/place", "m.gguf", b"y" * 5000)
    other_origin = hub.file_url(f).replace("127.0.0.1", "localhost")
    write_catalog(env / "models.toml", {"id": "elsewhere", "url": other_origin, "sha256": f.sha256})
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    manager().download("elsewhere", progress=False)
    assert "authorization" not in hub.gets()[-1].headers


@pytest.mark.parametrize(
    ("status", "words"),
    [(404, "not found \\(HTTP 404\\)"), (500, "server error \\(HTTP 500\\)"), (403, "access denied \\(HTTP 403\\)")],
)
def test_http_errors_are_one_clear_line(hub: HubServer, env: Path, status: int, words: str) -> None:
    tiny_model(hub, env)
    hub.faults.status = status
    with pytest.raises(DownloadError, match=words) as info:
        manager().download("tiny", progress=False)
    assert "\n" not in str(info.value)


def test_server_errors_are_retried(hub: HubServer, env: Path) -> None:
    f = tiny_model(hub, env)
    hub.faults.status, hub.faults.status_times = 503, 1
    assert manager(retries=1).download("tiny", progress=False).read_bytes() == f.data


def test_a_stalled_server_times_out_and_keeps_the_part(hub: HubServer, env: Path) -> None:
    tiny_model(hub, env, SIZE)
    hub.faults.stall_after, hub.faults.stall_seconds = 40_000, 10
    mm = manager(timeout=0.5)
    with pytest.raises(DownloadError, match="timed out after 0.5s"):
        mm.download("tiny", progress=False)
    assert 0 < files(mm).part.stat().st_size <= 40_000


def test_connection_refused(env: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write_catalog(env / "models.toml", {"id": "gone", "url": f"http://127.0.0.1:{port}/x.gguf", "sha256": "1" * 64})
    with pytest.raises(DownloadError, match="cannot connect to http://127.0.0.1"):
        manager().download("gone", progress=False)


def test_not_enough_disk_space(hub: HubServer, env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_model(hub, env, SIZE)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(download_mod.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    mm = manager()
    with pytest.raises(DownloadError, match="not enough disk space .* need 262.1 kB, 1.0 kB free"):
        mm.download("tiny", progress=False)
    assert not files(mm).part.exists()
    assert shutil.disk_usage is download_mod.shutil.disk_usage  # same module object, patched in-process


def test_force_downloads_again(hub: HubServer, env: Path) -> None:
    f = tiny_model(hub, env)
    mm = manager()
    mm.download("tiny", progress=False)
    mm.download("tiny", force=True, progress=False)
    assert len(hub.gets()) == 2 and files(mm).model.read_bytes() == f.data


def test_a_file_put_in_place_by_hand_is_hashed_not_downloaded(hub: HubServer, env: Path) -> None:
    f = tiny_model(hub, env)
    mm = manager()
    target = files(mm).model
    target.parent.mkdir(parents=True)
    target.write_bytes(f.data)
    assert mm.status(mm.entry("tiny")).state == "unverified"
    mm.download("tiny", progress=False)
    assert hub.gets() == [] and mm.status(mm.entry("tiny")).downloaded


def test_a_tampered_file_in_place_is_replaced(hub: HubServer, env: Path) -> None:
    f = tiny_model(hub, env)
    mm = manager()
    mm.download("tiny", progress=False)
    target = files(mm).model
    target.write_bytes(b"\0" * f.size)
    ok, actual = mm.verify(mm.entry("tiny"))
    assert not ok and actual == hashlib.sha256(b"\0" * f.size).hexdigest()


def test_an_unwritable_models_dir_is_one_clear_error(hub: HubServer, env: Path) -> None:
    tiny_model(hub, env)
    blocker = env / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(DownloadError, match="tiny: cannot write the download .*not-a-dir"):
        manager(models_dir=blocker / "models").download("tiny", progress=False)


def test_the_hub_error_message_is_passed_on(hub: HubServer, env: Path) -> None:
    write_catalog(env / "models.toml", {"id": "ghost", "repo": "test/none", "file": "ghost.gguf"})
    with pytest.raises(DownloadError, match=r"not found \(HTTP 404\) \(hub: Entry not found\): http://127"):
        manager().download("ghost", progress=False)
