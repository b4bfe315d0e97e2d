"""`neuro serve --detach`, `neuro daemon status|stop`, SIGTERM with answers in flight, bind errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from neuro_bitnet.server.daemon import is_alive

from support.daemon_proc import FIXTURE_MODEL, DaemonProcess, isolated_env

pytestmark = pytest.mark.skipif(not FIXTURE_MODEL.is_file(), reason="fixture model missing")


def neuro(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neuro_bitnet.cli.main", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


@pytest.mark.slow
def test_detach_status_stop(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    env["NEURO_DAEMON_PORT"] = "0"  # the environment picks the port: 0 means any free one
    env["NEURO_BITNET_MODEL"] = str(FIXTURE_MODEL)
    pid_file = tmp_path / "run" / "neuro.pid"
    started = neuro("serve", "--detach", "--pid-file", str(pid_file), "--threads", "1", "--ctx-size", "256",
                    env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    pid = int(pid_file.read_text())
    try:
        assert "running" in started.stdout and str(pid) in started.stdout

        status = neuro("daemon", "status", "--pid-file", str(pid_file), "--json", env=env)
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["running"] is True and report["pid"] == pid
        assert report["health"]["model"] == "bitnet-b1.58"
        url = report["url"]
        assert httpx.get(url + "/health").json()["status"] == "ok"

        again = neuro("serve", "--detach", "--pid-file", str(pid_file), env=env)
        assert again.returncode != 0 and "already running" in again.stderr

        stopped = neuro("daemon", "stop", "--pid-file", str(pid_file), env=env)
        assert stopped.returncode == 0, stopped.stderr
        assert f"pid {pid}" in stopped.stdout
        assert not pid_file.exists()
        assert not is_alive(pid)  # gone (or a zombie waiting for a reaper)
    finally:
        if pid_file.exists():
            os.kill(pid, 9)
    after = neuro("daemon", "status", "--pid-file", str(pid_file), "--url", url, env=env)
    assert after.returncode == 1 and "not running" in after.stdout


@pytest.mark.slow
def test_sigterm_finishes_the_answer_in_flight_then_exits_cleanly(tmp_path: Path) -> None:
    daemon = DaemonProcess(["--ctx-size", "512"], tmp_path).wait_ready()
    # No --storage/--embedder here: those endpoints say how to turn them on.
    off = httpx.post(daemon.url + "/v1/embeddings", json={"input": "hi"}).json()["error"]
    assert off["code"] == "embeddings_disabled" and "--embedder" in off["message"]
    assert "--storage" in httpx.post(daemon.url + "/v1/search", json={"query": "hi"}).json()["error"]["message"]
    lines: list[str] = []
    first_chunk = threading.Event()

    def client() -> None:
        body = {"prompt": "Hello", "max_tokens": 120, "temperature": 0, "stream": True}
        with httpx.stream("POST", daemon.url + "/v1/completions", json=body, timeout=120) as response:
            for line in response.iter_lines():
                if line:
                    lines.append(line)
                    first_chunk.set()

    thread = threading.Thread(target=client)
    thread.start()
    assert first_chunk.wait(60)
    daemon.terminate()
    thread.join(120)
    assert daemon.proc.wait(60) == 0, daemon.output()
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert lines[-1] == "data: [DONE]"
    assert events[-1]["choices"][0]["finish_reason"] == "length"  # the whole answer, not cut short
    assert "stopped" in daemon.output()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = neuro("serve", "--model", str(FIXTURE_MODEL), "--threads", "1", "--port", str(port),
                       env=isolated_env(tmp_path))
    assert result.returncode == 6
    assert "already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_explicit_parallel_that_cannot_fit_the_memory_is_refused_at_start(tmp_path: Path) -> None:
    """--parallel 256 slots of --ctx-size 131072 (the CLI's largest) need 64 GiB of KV memory for
    the fixture model: past half the available memory here, a one-line error (exit code 5)."""
    from neuro_bitnet.engine.architecture import HParams
    from neuro_bitnet.engine.gguf import GGUFFile
    from neuro_bitnet.engine.parallel import MEMORY_SHARE, available_memory, kv_bytes_per_token

    with GGUFFile(FIXTURE_MODEL) as f:
        need = 256 * 131072 * kv_bytes_per_token(HParams.from_metadata(f.metadata, n_vocab_fallback=1))
    memory = available_memory()
    if memory is None or memory * MEMORY_SHARE >= need / 2:
        pytest.skip("this machine has the memory for the slots (or does not say)")
    result = neuro("serve", "--model", str(FIXTURE_MODEL), "--threads", "1", "--port", "0",
                   "--parallel", "256", "--ctx-size", "131072", env=isolated_env(tmp_path))
    assert result.returncode == 5, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "256 parallel slots of 131072 positions need 64.0 GiB" in errors[0]
    assert "GiB available" in errors[0] and "--parallel" in errors[0]
    assert "Traceback" not in result.stderr and "serving" not in result.stdout


def test_non_loopback_bind_without_key_warns() -> None:
    from neuro_bitnet.server.config import ServerConfig
    from neuro_bitnet.server.runner import insecure_bind_warning

    assert insecure_bind_warning(ServerConfig(host="127.0.0.1")) is None
    assert insecure_bind_warning(ServerConfig(host="localhost")) is None
    assert insecure_bind_warning(ServerConfig(host="::1")) is None
    assert insecure_bind_warning(ServerConfig(host="0.0.0.0", api_key="k")) is None
    assert "--api-key" in insecure_bind_warning(ServerConfig(host="0.0.0.0"))
    assert "--api-key" in insecure_bind_warning(ServerConfig(host="192.168.1.5"))


def test_neuro_daemon_alias_runs_serve() -> None:
    result = subprocess.run([sys.executable, "-c", "import sys; sys.argv=['neuro-daemon','--help'];"
                             "from neuro_bitnet.cli.serve_cmd import daemon_main; daemon_main()"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "--api-key" in result.stdout and "--detach" in result.stdout


@pytest.mark.parametrize("key, why", [("", "empty"), ("   ", "a space"), ("clé-secrète", "'é'"),
                                      ("two words", "a space"), ("tab\tkey", "whitespace")])
def test_unusable_api_keys_are_refused_at_start(tmp_path: Path, key: str, why: str) -> None:
    result = neuro("serve", "--model", str(FIXTURE_MODEL), "--threads", "1", "--port", "0", "--api-key", key,
                   env=isolated_env(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "API key" in result.stderr and why in result.stderr
    assert "Traceback" not in result.stderr and "serving" not in result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_key_on_the_command_line_warns_about_ps(tmp_path: Path) -> None:
    daemon = DaemonProcess(["--api-key", "k3y-for-the-test"], tmp_path).wait_ready()
    try:
        assert "NEURO_DAEMON_API_KEY" in daemon.output() and "process list" in daemon.output()
    finally:
        assert daemon.stop() == 0
    env = isolated_env(tmp_path)
    env["NEURO_DAEMON_API_KEY"] = "k3y-for-the-test"
    quiet = DaemonProcess([], tmp_path, env=env).wait_ready()
    try:
        assert httpx.get(quiet.url + "/health").status_code == 401
        assert "process list" not in quiet.output()
    finally:
        assert quiet.stop() == 0


@pytest.mark.slow
def test_daemon_stop_reaches_a_foreground_server(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    env["NEURO_DAEMON_API_KEY"] = "stop-key-123"
    daemon = DaemonProcess([], tmp_path, env=env).wait_ready()
    no_pid_file = str(tmp_path / "none.pid")
    try:
        status = neuro("daemon", "status", "--pid-file", no_pid_file, "--url", daemon.url, env=env)
        assert status.returncode == 0 and "running" in status.stdout, status.stdout + status.stderr

        without_key = dict(env)
        del without_key["NEURO_DAEMON_API_KEY"]
        refused = neuro("daemon", "stop", "--pid-file", no_pid_file, "--url", daemon.url, env=without_key)
        assert refused.returncode != 0 and "API key" in refused.stderr
        assert daemon.proc.poll() is None  # still serving

        stopped = neuro("daemon", "stop", "--pid-file", no_pid_file, "--url", daemon.url, env=env)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert f"pid {daemon.proc.pid}" in stopped.stdout
        assert daemon.proc.wait(60) == 0  # a graceful stop
    finally:
        daemon.stop()
    nothing = neuro("daemon", "stop", "--pid-file", no_pid_file, "--url", daemon.url, env=env)
    assert nothing.returncode == 0 and "no daemon running" in nothing.stdout


def test_daemon_stop_refuses_a_server_that_is_not_a_neuro_daemon(tmp_path: Path) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class NotNeuro(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b'{"status": "ok"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotNeuro)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = neuro("daemon", "stop", "--pid-file", str(tmp_path / "none.pid"), "--url", url,
                       env=isolated_env(tmp_path))
        assert result.returncode == 6, result.stdout + result.stderr
        assert "pid" in result.stderr and "Traceback" not in result.stderr
    finally:
        server.shutdown()
