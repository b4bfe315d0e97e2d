"""`neuro model` and `neuro config` as real subprocesses against the loopback hub."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neuro_bitnet.engine.synthetic import build_synthetic_model

from support.hubserver import HubServer, hub_env, run_cli, tiny_model, write_catalog
from support.signals import default_signals

SIZE = 512 * 1024


def neuro_env(hub: HubServer, root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "NEURO_BITNET_DEBUG")}
    env.update(hub_env(hub, root, **extra))
    return env


def neuro_cmd(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("neuro")  # the installed entry point, when there is one
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "neuro_bitnet.cli.main", *args]


run = run_cli  # `neuro ARGS` in-process (tests/support/hubserver.py)


def run_process(hub: HubServer, root: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """`neuro ARGS` as a real subprocess."""
    return subprocess.run(neuro_cmd(*args), env=neuro_env(hub, root, **extra), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def assert_one_clear_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], result.stderr


def model_path(root: Path, model_id: str = "tiny") -> Path:
    return root / "models" / model_id / f"{model_id}.gguf"


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def test_list_json_and_table(hub: HubServer, tmp_path: Path) -> None:
    tiny_model(hub, tmp_path)
    data = json.loads(run(hub, tmp_path, "model", "list", "--json").stdout)
    by_id = {m["id"]: m for m in data}
    assert list(by_id)[:4] == ["2b", "large", "3b", "8b"]
    assert by_id["tiny"]["downloaded"] is False and by_id["tiny"]["path"] is None
    assert by_id["2b"]["default"] and by_id["large"]["state"] == "convert"
    assert run(hub, tmp_path, "model", "download", "tiny").returncode == 0
    data = json.loads(run(hub, tmp_path, "model", "list", "--json").stdout)
    tiny = {m["id"]: m for m in data}["tiny"]
    assert tiny["downloaded"] is True and tiny["path"] == str(model_path(tmp_path))
    table = run(hub, tmp_path, "model", "list").stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "PARAMS", "SOURCE", "DISK", "STATUS", "PATH"]
    row = next(line for line in table if line.startswith("tiny"))
    assert "downloaded" in row and str(model_path(tmp_path)) in row
    assert "needs conversion" in next(line for line in table if line.startswith("large"))


@pytest.mark.slow
def test_download_prints_the_path_and_quiet_progress_when_piped(hub: HubServer, tmp_path: Path) -> None:
    f = tiny_model(hub, tmp_path, SIZE)
    hub.faults.chunk_size = 8192
    result = run_process(hub, tmp_path, "model", "download", "tiny")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(model_path(tmp_path))
    assert model_path(tmp_path).read_bytes() == f.data
    assert "downloading tiny (524.3 kB)" in result.stderr
    assert "%" in result.stderr and "\r" not in result.stderr and "\x1b[" not in result.stderr
    assert f"sha256 {f.sha256} verified (pinned sha256)" in result.stderr
    again = run(hub, tmp_path, "model", "download", "tiny")
    assert again.returncode == 0 and "already downloaded and verified" in again.stderr
    assert len(hub.gets()) == 1


def test_download_of_a_conversion_model_missing_on_the_hub_explains(hub: HubServer, tmp_path: Path) -> None:
    write_catalog(tmp_path / "models.toml")
    result = run(hub, tmp_path, "model", "download", "large")
    assert_one_clear_error(result, 4, "HTTP 404", "1bitLLM/bitnet_b1_58-large")


def test_resume_after_a_cut(hub: HubServer, tmp_path: Path) -> None:
    f = tiny_model(hub, tmp_path, SIZE)
    hub.faults.cut_after, hub.faults.cut_times = 200_000, 1
    first = run(hub, tmp_path, "model", "download", "tiny")
    assert_one_clear_error(first, 4, "connection", "lost", "run the same command again to resume")
    part = model_path(tmp_path).with_name("tiny.gguf.part")
    kept = part.stat().st_size
    assert kept > 0 and not model_path(tmp_path).exists()
    second = run(hub, tmp_path, "model", "download", "tiny")
    assert second.returncode == 0, second.stderr
    assert "resuming at" in second.stderr
    assert hub.gets()[-1].headers["range"] == f"bytes={kept}-"
    assert model_path(tmp_path).read_bytes() == f.data and not part.exists()


def test_server_ignoring_range_restarts(hub: HubServer, tmp_path: Path) -> None:
    f = tiny_model(hub, tmp_path, SIZE)
    hub.faults.cut_after, hub.faults.cut_times = 200_000, 1
    run(hub, tmp_path, "model", "download", "tiny")
    hub.faults.ignore_range = True
    result = run(hub, tmp_path, "model", "download", "tiny")
    assert result.returncode == 0 and "does not support resuming" in result.stderr
    assert model_path(tmp_path).read_bytes() == f.data


def test_checksum_mismatch(hub: HubServer, tmp_path: Path) -> None:
    import hashlib

    f = tiny_model(hub, tmp_path)
    hub.faults.wrong_bytes = True
    got = hashlib.sha256(bytes(b ^ 0x5A for b in f.data[:64]) + f.data[64:]).hexdigest()
    result = run(hub, tmp_path, "model", "download", "tiny")
    assert_one_clear_error(result, 4, "checksum mismatch", f.sha256, got, "deleted")
    left = [p.name for p in (tmp_path / "models" / "tiny").iterdir()]
    assert left in ([], ["tiny.gguf.lock"])


def test_lfs_hash_is_recorded_and_shown_by_info(hub: HubServer, tmp_path: Path) -> None:
    f = tiny_model(hub, tmp_path, pin=False)
    assert run(hub, tmp_path, "model", "download", "tiny").returncode == 0
    text = run(hub, tmp_path, "model", "info", "tiny").stdout
    assert f"recorded sha256  {f.sha256}" in text and "hub LFS sha256" in text
    assert "none pinned" in text
    info = json.loads(run(hub, tmp_path, "model", "info", "tiny", "--json", "--verify").stdout)
    assert info["recorded_sha256"] == f.sha256 and info["verify"] == {"ok": True, "sha256": f.sha256}
    cache = json.loads(run(hub, tmp_path, "model", "info", "--json").stdout)
    assert cache["models_dir"] == str(tmp_path / "models")
    assert {Path(x["path"]).name for x in cache["files"]} == {"tiny.gguf", "tiny.gguf.sha256"}
    assert cache["disk_use"] == f.size + len(f"{f.sha256}  tiny.gguf\n")
    assert f.sha256 in run(hub, tmp_path, "model", "info").stdout


def test_info_verify_catches_a_tampered_file(hub: HubServer, tmp_path: Path) -> None:
    f = tiny_model(hub, tmp_path)
    run(hub, tmp_path, "model", "download", "tiny")
    model_path(tmp_path).write_bytes(b"\1" * f.size)
    result = run(hub, tmp_path, "model", "info", "tiny", "--verify")
    assert "MISMATCH" in result.stdout
    assert_one_clear_error(result, 1, "does not match")


def test_http_401_suggests_hf_token_and_token_is_sent(hub: HubServer, tmp_path: Path) -> None:
    tiny_model(hub, tmp_path)
    hub.faults.require_token = "hf_abc"
    assert_one_clear_error(run(hub, tmp_path, "model", "download", "tiny"), 4, "401", "HF_TOKEN")
    ok = run(hub, tmp_path, "model", "download", "tiny", HF_TOKEN="hf_abc")
    assert ok.returncode == 0, ok.stderr
    assert hub.gets()[-1].headers["authorization"] == "Bearer hf_abc"


@pytest.mark.parametrize(("status", "words"), [(404, ("HTTP 404", "not found")), (500, ("HTTP 500",))])
def test_http_errors(hub: HubServer, tmp_path: Path, status: int, words: tuple[str, ...]) -> None:
    tiny_model(hub, tmp_path)
    hub.faults.status = status
    assert_one_clear_error(run(hub, tmp_path, "model", "download", "tiny"), 4, *words)


def test_timeout(hub: HubServer, tmp_path: Path) -> None:
    tiny_model(hub, tmp_path, SIZE)
    hub.faults.stall_after, hub.faults.stall_seconds = 50_000, 10
    result = run(hub, tmp_path, "model", "download", "tiny", NEURO_BITNET_TIMEOUT="0.5")
    assert_one_clear_error(result, 4, "timed out after 0.5s", "resume")


def test_remove(hub: HubServer, tmp_path: Path) -> None:
    tiny_model(hub, tmp_path)
    run(hub, tmp_path, "model", "download", "tiny")
    refused = run(hub, tmp_path, "model", "remove", "tiny")
    assert_one_clear_error(refused, 1, "--yes")
    assert model_path(tmp_path).exists()
    removed = run(hub, tmp_path, "model", "remove", "tiny", "--yes")
    assert removed.returncode == 0 and "removed tiny" in removed.stderr
    assert not (tmp_path / "models" / "tiny").exists()
    again = run(hub, tmp_path, "model", "remove", "tiny", "--yes")
    assert again.returncode == 0 and "nothing to remove" in again.stderr


def test_force_needs_confirmation_without_terminal(hub: HubServer, tmp_path: Path) -> None:
    tiny_model(hub, tmp_path)
    run(hub, tmp_path, "model", "download", "tiny")
    assert_one_clear_error(run(hub, tmp_path, "model", "download", "tiny", "--force"), 1, "--yes")
    assert run(hub, tmp_path, "model", "download", "tiny", "--force", "--yes").returncode == 0
    assert len(hub.gets()) == 2


def test_local_gguf_path_is_accepted(hub: HubServer, tmp_path: Path) -> None:
    write_catalog(tmp_path / "models.toml")
    local = build_synthetic_model("tiny", tmp_path / "mine.gguf")
    info = json.loads(run(hub, tmp_path, "model", "info", str(local), "--json").stdout)
    assert (info["path"], info["size"], info["kind"]) == (str(local), local.stat().st_size, "local file")
    assert (info["architecture"], info["name"], info["context_length"]) == ("bitnet-b1.58", "bitnet2b-tiny", 512)
    assert info["tensor_types"] == {"F32": 9, "I2_S": 14, "F16": 1} and info["file_type"] == 40
    assert info["chat_format"]["format"] == "bitnet"
    text = run(hub, tmp_path, "model", "info", str(local)).stdout
    assert "architecture  bitnet-b1.58" in text and "name          bitnet2b-tiny" in text
    assert "context       512 tokens" in text and "I2_S x14, F32 x9, F16 x1 (file_type 40)" in text
    assert "chat format   BitNet (built in; the file's template is Microsoft's placeholder)" in text
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 100)
    assert_one_clear_error(run(hub, tmp_path, "model", "info", str(broken)), 5, "unsupported GGUF version 0")
    missing = run(hub, tmp_path, "model", "info", str(tmp_path / "nope.gguf"))
    assert_one_clear_error(missing, 3, "model file not found")


def test_unknown_model_and_bad_catalog(hub: HubServer, tmp_path: Path) -> None:
    write_catalog(tmp_path / "models.toml")
    assert_one_clear_error(run(hub, tmp_path, "model", "download", "3bb"), 3, "unknown model", "3b")
    (tmp_path / "models.toml").write_text("[[models]]\nid = 'x'\n")
    assert_one_clear_error(run(hub, tmp_path, "model", "list"), 2, "models.toml", "url or repo and file")


def test_config_and_doctor(hub: HubServer, tmp_path: Path) -> None:
    tiny_model(hub, tmp_path)
    run(hub, tmp_path, "model", "download", "tiny")
    report = json.loads(run(hub, tmp_path, "config", "--json", HF_TOKEN="hf_secret").stdout)
    settings = report["settings"]
    assert settings["models_dir"] == {"value": str(tmp_path / "models"), "source": "env",
                                      "env": "NEURO_BITNET_MODELS_DIR"}
    assert settings["hf_endpoint"]["value"] == hub.url
    assert settings["hf_token"]["value"] == "set"
    assert report["engine"]["version"]
    assert [m["id"] for m in report["models"]] == ["tiny"]
    text = run(hub, tmp_path, "doctor", "--models-dir", str(tmp_path / "elsewhere")).stdout
    assert str(tmp_path / "elsewhere") in text and "[flag]" in text and "CPU features" in text
    assert "hf_secret" not in json.dumps(report)


@pytest.mark.slow
def test_two_concurrent_downloads_do_not_collide(hub: HubServer, tmp_path: Path) -> None:
    f = tiny_model(hub, tmp_path, SIZE)
    hub.faults.gate_after = 64 * 1024  # the first download holds here until the second one waits
    env = neuro_env(hub, tmp_path, NEURO_BITNET_TIMEOUT="60")
    part = model_path(tmp_path).with_name("tiny.gguf.part")
    first = subprocess.Popen(neuro_cmd("model", "download", "tiny"), env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: part.exists() and part.stat().st_size > 0)
        second = subprocess.Popen(neuro_cmd("model", "download", "tiny"), env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        waiting = second.stderr.readline()
        assert "another download of tiny is in progress; waiting" in waiting
    finally:
        hub.faults.gate.set()
    out1, err1 = first.communicate(timeout=60)
    out2, err2 = second.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    assert "already" not in err1 and "downloading tiny" not in err2  # the second one did not download
    assert out1 == out2 == f"{model_path(tmp_path)}\n"
    assert len(hub.gets()) == 1
    assert model_path(tmp_path).read_bytes() == f.data


@pytest.mark.slow
def test_ctrl_c_leaves_a_resumable_part(hub: HubServer, tmp_path: Path) -> None:
    f = tiny_model(hub, tmp_path, SIZE)
    hub.faults.gate_after = 64 * 1024
    part = model_path(tmp_path).with_name("tiny.gguf.part")
    proc = subprocess.Popen(neuro_cmd("model", "download", "tiny"), text=True,
                            env=neuro_env(hub, tmp_path, NEURO_BITNET_TIMEOUT="60"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            preexec_fn=default_signals)  # SIGINT works even when pytest runs in the background
    try:
        wait_for(lambda: part.exists() and part.stat().st_size >= 32 * 1024)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        hub.faults.gate.set()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "to resume" in err and "Traceback" not in err
    kept = part.stat().st_size
    assert 32 * 1024 <= kept <= 64 * 1024 and not model_path(tmp_path).exists()
    hub.faults.gate_after = None
    result = run(hub, tmp_path, "model", "download", "tiny")
    assert result.returncode == 0, result.stderr
    assert hub.gets()[-1].headers["range"] == f"bytes={kept}-"
    assert model_path(tmp_path).read_bytes() == f.data


def _run_in_pty(
    argv: list[str], env: dict[str, str], answer: bytes | None = None, timeout: float = 60
) -> tuple[int, str]:
    """Run with stdin/stdout/stderr on a pseudo-terminal; answer a question when one appears."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, env={**env, "COLUMNS": "120", "TERM": "xterm"},
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if answer is not None and b"[y/N]" in out or answer is not None and b"[Y/n]" in out:
                os.write(master, answer)
                answer = None
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=10), out.decode(errors="replace")


@pytest.mark.slow
def test_progress_bar_on_a_terminal(hub: HubServer, tmp_path: Path) -> None:
    tiny_model(hub, tmp_path, SIZE)
    hub.faults.chunk_size, hub.faults.throttle = 16 * 1024, 0.01
    code, out = _run_in_pty(neuro_cmd("model", "download", "tiny"), neuro_env(hub, tmp_path))
    assert code == 0, out
    assert "524.3 kB" in out and "/s" in out  # bytes done/total and the transfer rate
    assert model_path(tmp_path).exists()


ENSURE = (
    "import sys; from neuro_bitnet.config import load_settings; "
    "from neuro_bitnet.models.manager import ModelManager; from neuro_bitnet.cli.console import download_question; "
    "print(ModelManager(load_settings()).ensure_model('tiny', assume_yes=False, confirm=download_question()))"
)


@pytest.mark.parametrize(("answer", "code"), [(b"y\n", 0), (b"n\n", 1)])
def test_first_use_asks_before_downloading(hub: HubServer, tmp_path: Path, answer: bytes, code: int) -> None:
    tiny_model(hub, tmp_path)
    rc, out = _run_in_pty([sys.executable, "-c", ENSURE], neuro_env(hub, tmp_path), answer)
    assert "Model tiny" in out and "262.1 kB" in out and "Download it to" in out
    assert (rc == 0) == (code == 0), out
    assert model_path(tmp_path).exists() == (code == 0)
