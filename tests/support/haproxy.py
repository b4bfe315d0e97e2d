"""A real haproxy (the Debian package) in front of test daemons, on loopback.

The configuration is the one docs/deploy.md shows, read from it, on loopback without TLS and
with frequent health checks, so that a test does not wait long for a killed replica to be marked
down (a refused connection fails a check at once; a slow answer on a busy machine has the
documented ``timeout check`` to arrive).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

WAIT = 120.0  # seconds: generous, the machine may be busy; nothing here measures speed


def haproxy_binary() -> str | None:
    """The haproxy executable (Debian puts it in /usr/sbin, which a user's PATH may lack)."""
    return shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").is_file() else None)


DEPLOY_DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
# What the tests change in the documented configuration: where it listens and what it balances,
# check intervals short enough not to wait long for a killed replica, and a request log.
TEST_CHECKS = "check inter 500ms fall 2 rise 1 maxconn 16"


def documented_config() -> str:
    """The haproxy configuration block of docs/deploy.md."""
    text = DEPLOY_DOC.read_text()
    start = text.index("```haproxy\n") + len("```haproxy\n")
    return text[start:text.index("```", start)]


def config_text(port: int, backends: dict[str, str], stats_socket: Path) -> str:
    """The documented configuration on 127.0.0.1:``port`` (no TLS) over ``backends`` (name ->
    host:port), with its admin socket at ``stats_socket``."""
    lines = []
    for line in documented_config().splitlines():
        key = line.split("#", 1)[0].split()
        if key[:2] == ["stats", "socket"]:
            line = f"    stats socket {stats_socket} mode 600 level admin\n    log stderr format raw local0 info"
        elif key[:1] == ["bind"]:
            line = f"    bind 127.0.0.1:{port}"
        elif key[:1] == ["server"]:
            continue
        elif key == ["mode", "http"]:
            line += "\n    log global\n    option httplog"
        lines.append(line)
    lines += [f"    server {name} {address} {TEST_CHECKS}" for name, address in backends.items()]
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HAProxy:
    """haproxy in the foreground (``-db``) on a free loopback port; ``url`` is its frontend."""

    def __init__(self, directory: Path, backends: dict[str, str], api_key: str) -> None:
        """``api_key``: what the health checks send (the documented ``${NEURO_DAEMON_API_KEY}``)."""
        binary = haproxy_binary()
        assert binary is not None, "haproxy is not installed"
        directory.mkdir(parents=True, exist_ok=True)
        self.stats_socket = directory / "admin.sock"
        self.config = directory / "haproxy.cfg"
        self.log = directory / "haproxy.log"  # its messages and one line per request (httplog)
        self.proc: subprocess.Popen[bytes] | None = None
        env = {**os.environ, "NEURO_DAEMON_API_KEY": api_key}
        for _ in range(3):  # the free port may be taken between the probe and haproxy's bind
            self.port = _free_port()
            self.config.write_text(config_text(self.port, backends, self.stats_socket))
            check = subprocess.run([binary, "-c", "-q", "-f", str(self.config)], capture_output=True, text=True,
                                   env=env)
            assert check.returncode == 0, check.stdout + check.stderr
            self.stats_socket.unlink(missing_ok=True)
            with open(self.log, "w") as log:
                self.proc = subprocess.Popen([binary, "-db", "-f", str(self.config)], stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT, env=env)
            if self._wait_started():
                break
        else:
            raise RuntimeError("haproxy did not start:\n" + self.output())
        self.url = f"http://127.0.0.1:{self.port}"

    def _wait_started(self) -> bool:
        """True once the stats socket answers; False if haproxy exited (port taken)."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                self.command("show info")
                return True
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("haproxy's stats socket did not answer within the wait")

    def command(self, line: str) -> str:
        """One command on the admin socket, e.g. ``show stat``."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(30)
            sock.connect(str(self.stats_socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_status(self) -> dict[str, str]:
        """The health state of each server of the backend: "UP", "DOWN", "UP 1/2"..."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","))) for line in lines[1:] if line]
        return {r["svname"]: r["status"] for r in rows if r["pxname"] == "replicas" and r["svname"] != "BACKEND"}

    def wait_status(self, wanted: dict[str, str]) -> None:
        """Wait until the health checks report ``wanted`` (server -> status)."""
        deadline = time.monotonic() + WAIT
        while (status := self.server_status()) != {**status, **wanted}:
            assert self.proc is not None and self.proc.poll() is None, "haproxy exited:\n" + self.output()
            assert time.monotonic() < deadline, f"haproxy servers {status}, waited for {wanted}"
            time.sleep(0.05)

    def output(self) -> str:
        """What haproxy wrote so far: its warnings and one log line per request."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
