"""llama.cpp's ``llama-server`` as the anchor of benchmarks/daemon_load.py.

The binary is built (once, cached) from the same llama.cpp sources and options as the tests'
``llama-completion`` (tests/support/llama_cli.py, target ``llama-server``); the model is the
lossless TQ2_0 repack of the I2_S file (repack_tq2.cached_repack, architecture ``bitnet``: SiLU
where the model wants ReLU², the same work). The server is started on 127.0.0.1 with ``-np N``
slots and ``-c N * ctx_per_slot`` (llama-server's -c is the total shared by the slots), so each
slot holds what one of ours does.

    python benchmarks/peers/llama_server.py     # build (or find) llama-server, print its path
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 600.0  # seconds for the model to load and /health to answer 200
KV_FACTOR = 0.5  # llama-server's default KV cache type is f16: half of ours (reserved at float32)


def server_binary() -> Path:
    """The cached llama-server, built first if needed (many minutes on 2 cores; the log is named)."""
    sys.path.insert(0, str(REPO / "tests"))
    from support.llama_cli import ensure_llama_cli

    return ensure_llama_cli(target="llama-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(binary: Path, model: Path, *, parallel: int, ctx_per_slot: int, threads: int | None,
            log_path: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """Start llama-server, wait for its /health, yield (process, base URL); terminate it at the end."""
    port = _free_port()
    cmd = [str(binary), "-m", str(model), "-np", str(parallel), "-c", str(parallel * ctx_per_slot),
           "--host", "127.0.0.1", "--port", str(port)]
    if threads:
        cmd += ["--threads", str(threads)]
    print(f"$ {' '.join(cmd)}  (log: {log_path})", file=sys.stderr)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"llama-server exited with {proc.returncode} before it was ready; log: {log_path}")
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"llama-server not ready after {START_TIMEOUT:.0f} s; log: {log_path}")
            time.sleep(0.5)
        try:
            yield proc, url
        except httpx.HTTPError:
            if proc.poll() is not None:
                raise SystemExit(f"llama-server exited ({proc.returncode}) during the run; log: {log_path}") from None
            raise
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    print(server_binary())
