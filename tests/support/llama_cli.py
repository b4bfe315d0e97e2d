"""Builds a real llama.cpp command-line binary once, for the subprocess backend's tests.

The llama.cpp sources come from the `llama-cpp-python` sdist on PyPI (its `vendor/llama.cpp`).
Current llama.cpp names the classic prompt-in/text-out program `llama-completion` (what older
trees, including Microsoft's bitnet.cpp, call `llama-cli`; today's `llama-cli` is chat-only);
that one target and what it links are all that is built. The binary is cached under
~/.cache/neuro-bitnet/test-tools/ so later runs reuse it; a file lock makes concurrent test runs
wait for one build instead of starting their own. Needs cmake and a C++17 compiler. A build
reports its steps and compile progress (`progress`, on the terminal during a test run) instead of
being silent for minutes.

Cost of a build from scratch (measured on the 2-core dev machine, shared with other jobs): 645 s
of CPU, 10.6 min wall at load 3-7; so about 5-6 min on an idle 2-core CI runner, plus the 77 MB
download. (Before -O1 for C++: 900+ s of CPU.)

The same code builds other targets of those sources into the same cache, each binary beside the
other (`ensure_llama_cli(target="llama-server")`, used by benchmarks/daemon_load.py's anchor);
TARGET_CMAKE_OPTIONS holds what a target adds to CMAKE_OPTIONS, and each target has its own log.

    python tests/support/llama_cli.py                 # build (or find) llama-completion, print its path
    python tests/support/llama_cli.py llama-server    # the same for another target
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

SDIST_PACKAGE = "llama-cpp-python==0.3.36"
TARGET = "llama-completion"
BUILD_REVISION = 2  # bump when the build changes the binary's behaviour, so caches rebuild
# Everything but the one program and its libraries is switched off; ggml is tuned for this CPU
# (the binary never leaves the machine that built it). C++ is compiled at -O1, C (ggml's
# kernels: TQ2_0 dot products, matmul) at Release's -O3: without -ffast-math neither changes a
# result, and -O1 compiles llama.cpp's template-heavy C++ 1.3-2.3x faster per file (arg.cpp 42 s
# -> 26 s, ops.cpp 19 s -> 8 s of CPU here).
CMAKE_OPTIONS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DCMAKE_CXX_FLAGS_RELEASE=-O1 -DNDEBUG",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_SUBPROCESS=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
    "-DGGML_OPENMP=OFF",
]
# What a target other than TARGET needs on top (later -D options override earlier ones). The
# server is built without its web UI (no npm, no download of prebuilt assets).
TARGET_CMAKE_OPTIONS: dict[str, list[str]] = {
    "llama-server": ["-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF"],
}


class LlamaBuildError(RuntimeError):
    """The llama.cpp build failed; the message names the log."""


# llama.cpp's logger prints from a worker thread, and its singleton is deliberately never
# destroyed (common/log.cpp, citing ggml-org/llama.cpp#22142), so nothing flushes it at exit: when
# the main thread finishes first, as it often does with a tiny model on a busy machine, the answer
# and the performance report are lost (seen here: 1 run in 4 printed nothing and exited 0).
# The patch flushes the log before llama-completion returns.
_FLUSH_PATCH = (
    "tools/completion/completion.cpp",
    "    llama_backend_free();\n\n    return 0;\n}",
    "    llama_backend_free();\n\n    common_log_pause(common_log_main()); // flush the log (neuro-bitnet tests)\n\n"
    "    return 0;\n}",
)


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "neuro-bitnet" / "test-tools" / f"{SDIST_PACKAGE.replace('==', '-')}-r{BUILD_REVISION}"


Progress = Callable[[str], None]
# "[ 42/180] Building CXX object ..." (ninja) or "[ 23%] Building CXX object ..." (make)
_STEP = re.compile(rb"^\[\s*(\d+)/(\d+)\]|^\[\s*(\d+)%\]")
PROGRESS_EVERY = 10  # report compile progress in steps of this many percent


def compile_percent(line: bytes) -> int | None:
    """How far the build is, from one line of ninja's or make's output (None: not a step line)."""
    match = _STEP.match(line)
    if match is None:
        return None
    return int(match[3]) if match[3] else 100 * int(match[1]) // max(1, int(match[2]))


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_llama_cli(progress: Progress = _stderr, target: str = TARGET) -> Path:
    """Path of the cached binary, building it first if needed (minutes: see the module docstring).

    ``progress`` receives one line per build step and per PROGRESS_EVERY % compiled; ``target``
    is TARGET or a key of TARGET_CMAKE_OPTIONS.
    """
    if target != TARGET and target not in TARGET_CMAKE_OPTIONS:
        known = ", ".join([TARGET, *TARGET_CMAKE_OPTIONS])
        raise LlamaBuildError(f"unknown llama.cpp target {target!r} (known: {known})")
    binary = cache_dir() / target
    if binary.is_file():
        return binary
    cache_dir().mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(cache_dir() / "build.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        progress(f"llama.cpp test build: waiting for another process building {binary}")
        lock.acquire()
    try:
        if not binary.is_file():  # another process may have built it while we waited
            log_path = cache_dir() / ("build.log" if target == TARGET else f"build-{target}.log")
            progress(f"llama.cpp test build: building {target} once (several minutes; log: {log_path})")
            try:
                with open(log_path, "wb") as log:
                    _build(binary, target, log, progress)
            except (OSError, subprocess.CalledProcessError, StopIteration) as exc:
                raise LlamaBuildError(f"building {target} failed ({exc}); log: {log_path}\n{_tail(log_path)}") from None
    finally:
        lock.release()
    return binary


def _build(binary: Path, target: str, log, progress: Progress) -> None:
    """Download the sdist, extract vendor/llama.cpp, build ``target``, install it as ``binary``."""
    started = time.monotonic()
    if shutil.which("cmake") is None:
        raise LlamaBuildError(f"building {target} needs cmake on PATH (`pip install cmake`) and a C++17 compiler")

    def run(cmd: list[str], step: str) -> None:
        progress(f"llama.cpp test build: {step}")
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        shown = 0
        for line in proc.stdout:
            log.write(line)
            done = compile_percent(line)
            if done is not None:
                if done >= shown + PROGRESS_EVERY:
                    shown = done - done % PROGRESS_EVERY
                    progress(f"llama.cpp test build: compiled {done}% ({time.monotonic() - started:.0f} s)")
        if proc.wait() != 0:
            raise subprocess.CalledProcessError(proc.returncode, cmd)

    with tempfile.TemporaryDirectory(prefix="llama-build-") as tmp:
        tmp_path = Path(tmp)
        # Only the package itself as an sdist: `--no-binary :all:` would also build its build
        # dependencies (cmake, ninja) from source to prepare its metadata.
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", SDIST_PACKAGE.split("==")[0],
             SDIST_PACKAGE, "-d", str(tmp_path)], f"downloading the {SDIST_PACKAGE} sdist")
        sdist = next(tmp_path.glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name]
            tar.extractall(tmp_path, members=members, filter="data")
        source = next(tmp_path.glob("llama_cpp_python-*/vendor/llama.cpp"))
        _patch(source, *_FLUSH_PATCH)
        build = tmp_path / "build"
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        run(["cmake", "-S", str(source), "-B", str(build), *generator, *CMAKE_OPTIONS,
             *TARGET_CMAKE_OPTIONS.get(target, [])], "configuring")
        run(["cmake", "--build", str(build), "--target", target, "-j", str(_jobs())],
            f"compiling {target} with {_jobs()} jobs")
        built = next(p for p in build.rglob(target) if p.is_file() and os.access(p, os.X_OK))
        partial = binary.with_name(binary.name + ".part")
        shutil.copy2(built, partial)
        partial.replace(binary)
    progress(f"llama.cpp test build: built {binary} in {time.monotonic() - started:.0f} s")
    log.write(f"built {binary} in {time.monotonic() - started:.0f} s\n".encode())


def _patch(source: Path, relative: str, old: str, new: str) -> None:
    path = source / relative
    text = path.read_text()
    if text.count(old) != 1:
        raise LlamaBuildError(f"cannot patch {relative}: the expected code is not there (llama.cpp changed?)")
    path.write_text(text.replace(old, new))


def _jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 2


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


if __name__ == "__main__":
    print(ensure_llama_cli(target=sys.argv[1] if len(sys.argv) > 1 else TARGET))
