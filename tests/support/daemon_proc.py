"""Start the real daemon (`python -m neuro_bitnet.cli.serve_cmd`) on a free loopback port, for tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from support.pauses import Pauses

REPO = Path(__file__).resolve().parents[2]
FIXTURE_MODEL = REPO / "tests" / "fixtures" / "bitnet-b1.58" / "model.gguf"
READY = re.compile(r"serving (\S+) on (http://\S+) ")
# One compute thread: the tiny fixture model gains nothing from more, and the machine is shared.
BASE_ARGS = ["--model", str(FIXTURE_MODEL), "--threads", "1", "--port", "0", "--quiet"]
# The shared test daemon (tests/server/conftest.py): its API key, context size and body limit.
API_KEY = "test-key-1234"
CTX_SIZE = 512
MAX_BODY = 64 * 1024


def has_onnx() -> bool:
    """Whether the retrieval tests' tiny ONNX embedder can be built here."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def isolated_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["NEURO_BITNET_MODELS_DIR"] = str(tmp / "models")
    env["XDG_STATE_HOME"] = str(tmp / "state")
    for var in ("NEURO_DAEMON_HOST", "NEURO_DAEMON_PORT", "NEURO_DAEMON_API_KEY", "NEURO_BITNET_MODEL"):
        env.pop(var, None)
    return env


class DaemonProcess:
    """A server process; ``url`` and ``model_id`` come from its ready line; ``pauses`` holds its
    work at a pause point (generation: after each answer piece of visible text)."""

    def __init__(self, args: list[str], tmp: Path, env: dict[str, str] | None = None) -> None:
        # Inert until a test holds a point: see support.pauses.
        self.pauses = Pauses(tmp / "pauses")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "neuro_bitnet.cli.serve_cmd", *BASE_ARGS, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**(env or isolated_env(tmp)), **self.pauses.env()},
        )
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._ready = threading.Event()
        self.url = ""
        self.model_id = ""
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout_lines), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr_lines), daemon=True).start()

    def _pump(self, stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)
            match = READY.search(line)
            if match:
                self.model_id, self.url = match.group(1), match.group(2)
                self._ready.set()

    def wait_ready(self, timeout: float = 120.0) -> "DaemonProcess":
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the daemon did not start:\n" + self.output())
        return self

    def output(self) -> str:
        return "".join(self.stdout_lines) + "".join(self.stderr_lines)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit status (killed after ``timeout``)."""
        self.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
