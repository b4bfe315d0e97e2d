"""Backend choice: auto skips the daemon (and the HTTP client) when nothing listens at its address."""

from __future__ import annotations

import socket
import subprocess
import sys

from neuro_bitnet.backends.select import nothing_listens


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_listens_on_a_closed_port_and_something_on_an_open_one():
    assert nothing_listens(f"http://127.0.0.1:{_closed_port()}")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert not nothing_listens(f"http://127.0.0.1:{server.getsockname()[1]}")
    assert nothing_listens("http://127.0.0.1:99999")  # not a port
    assert nothing_listens("http://no-such-host.invalid:8080")


def test_auto_without_a_daemon_does_not_import_the_http_client(tmp_path):
    code = (
        "import sys\n"
        "from neuro_bitnet.backends.select import BackendRequest, open_backend\n"
        "from neuro_bitnet.config import load_settings\n"
        "from support.greedy import FIXTURE_MODEL\n"
        "backend = open_backend(BackendRequest(kind='auto', model=str(FIXTURE_MODEL), model_given=True,"
        " threads=1, ctx_size=64), load_settings())\n"
        "print(type(backend).__name__, 'httpx' in sys.modules)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "NEURO_DAEMON_URL": f"http://127.0.0.1:{_closed_port()}"}
    tests_dir = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": tests_dir},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["NativeBackend", "False"]
