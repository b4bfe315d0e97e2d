"""A real haproxy (the Debian package) in front of test daemons, on loopback.

The configuration is the one docs/deploy.md recommends, with the health checks made frequent
so that a test does not wait long for a killed replica to be marked down (a refused connection
fails a check at once; a slow answer on a busy machine has ``timeout check`` to arrive).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

WAIT = 120.0  # seconds: generous, the machine may be busy; nothing here measures speed


def haproxy_binary() -> str | None:
    """The haproxy executable (Debian puts it in /usr/sbin, which a user's PATH may lack)."""
    return shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").is_file() else None)


def config_text(port: int, backends: dict[str, str], api_key: str, stats_socket: Path) -> str:
    """haproxy.cfg: one frontend on 127.0.0.1:``port`` balancing over ``backends`` (name -> host:port)."""
    servers = "\n".join(f"    server {name} {address} check inter 500ms fall 2 rise 1 maxconn 16"
                        for name, address in backends.items())
    return f"""\
global
    maxconn 256
    log stderr format raw local0 info
    stats socket {stats_socket} mode 600 level admin

defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout queue 300s
    timeout http-request 30s
    timeout check 10s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response 503
    option http-buffer-request

frontend neuro
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk
    http-check send meth GET uri /health ver HTTP/1.1 hdr Host localhost hdr Authorization "Bearer {api_key}"
    http-check expect status 200
{servers}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HAProxy:
    """haproxy in the foreground (``-db``) on a free loopback port; ``url`` is its frontend."""

    def __init__(self, directory: Path, backends: dict[str, str], api_key: str) -> None:
        binary = haproxy_binary()
        assert binary is not None, "haproxy is not installed"
        directory.mkdir(parents=True, exist_ok=True)
        self.stats_socket = directory / "admin.sock"
        self.config = directory / "haproxy.cfg"
        self.log = directory / "haproxy.log"  # its messages and one line per request (httplog)
        self.proc: subprocess.Popen[bytes] | None = None
        for _ in range(3):  # the free port may be taken between the probe and haproxy's bind
            self.port = _free_port()
            self.config.write_text(config_text(self.port, backends, api_key, self.stats_socket))
            check = subprocess.run([binary, "-c", "-q", "-f", str(self.config)], capture_output=True, text=True)
            assert check.returncode == 0, check.stdout + check.stderr
            self.stats_socket.unlink(missing_ok=True)
            with open(self.log, "w") as log:
                self.proc = subprocess.Popen([binary, "-db", "-f", str(self.config)], stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT)
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
