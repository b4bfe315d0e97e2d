"""Builds a real llama.cpp command-line binary once, for the subprocess backend's tests.

The llama.cpp sources come from the `llama-cpp-python` sdist on PyPI (its `vendor/llama.cpp`).
Current llama.cpp names the classic prompt-in/text-out program `llama-completion` (what older
trees, including Microsoft's bitnet.cpp, call `llama-cli`); that is the target built here. The
binary is cached under ~/.cache/neuro-bitnet/test-tools/ so later runs reuse it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST_PACKAGE = "llama-cpp-python==0.3.36"
TARGET = "llama-completion"


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "neuro-bitnet" / "test-tools" / SDIST_PACKAGE.replace("==", "-")


def ensure_llama_cli(log=sys.stderr) -> Path:
    """Path of the cached binary, building it first if needed (several minutes on 2 cores)."""
    binary = cache_dir() / TARGET
    if binary.exists():
        return binary
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llama-build-") as tmp:
        tmp_path = Path(tmp)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST_PACKAGE,
             "-d", str(tmp_path)],
            check=True, stdout=log, stderr=log,
        )
        sdist = next(tmp_path.glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name]
            tar.extractall(tmp_path, members=members, filter="data")
        source = next(tmp_path.glob("llama_cpp_python-*/vendor/llama.cpp"))
        build = tmp_path / "build"
        subprocess.run(
            ["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
             "-DBUILD_SHARED_LIBS=OFF", "-DGGML_NATIVE=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
             "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DGGML_OPENMP=OFF"],
            check=True, stdout=log, stderr=log,
        )
        subprocess.run(
            ["cmake", "--build", str(build), "--target", TARGET, "-j", str(os.cpu_count() or 2)],
            check=True, stdout=log, stderr=log,
        )
        built = next(build.rglob(TARGET))
        partial = binary.with_suffix(".tmp")
        shutil.copy2(built, partial)
        partial.replace(binary)
    return binary


if __name__ == "__main__":
    print(ensure_llama_cli())
