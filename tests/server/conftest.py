"""Fixtures: real daemon processes serving a tiny real GGUF model on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.daemon_proc import API_KEY, CTX_SIZE, FIXTURE_MODEL, MAX_BODY, DaemonProcess, has_onnx


@pytest.fixture(scope="session")
def daemon(tmp_path_factory) -> Iterator[DaemonProcess]:
    """The shared server: fixture model, API key, small context and body limit."""
    if not FIXTURE_MODEL.is_file():
        pytest.skip(f"fixture model missing: {FIXTURE_MODEL}")
    tmp = tmp_path_factory.mktemp("daemon")
    args = ["--api-key", API_KEY, "--ctx-size", str(CTX_SIZE), "--max-body", str(MAX_BODY), "--max-tokens", "16"]
    if has_onnx():
        from support.index_fixture import build_index

        storage, embedder = build_index(tmp)
        args += ["--storage", str(storage), "--embedder", str(embedder)]
    proc = DaemonProcess(args, tmp).wait_ready()
    yield proc
    code = proc.stop()
    assert code == 0, proc.output()


@pytest.fixture(scope="session", params=[1, 4], ids=lambda n: f"parallel{n}")
def slots_daemon(request, tmp_path_factory) -> Iterator[DaemonProcess]:
    """A daemon with ``--parallel`` 1, then one with 4 (no retrieval): for what must hold in both."""
    if not FIXTURE_MODEL.is_file():
        pytest.skip(f"fixture model missing: {FIXTURE_MODEL}")
    args = ["--api-key", API_KEY, "--ctx-size", str(CTX_SIZE), "--max-tokens", "16", "--parallel", str(request.param)]
    proc = DaemonProcess(args, tmp_path_factory.mktemp(f"daemon-parallel{request.param}")).wait_ready()
    yield proc
    code = proc.stop()
    assert code == 0, proc.output()


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def openai_client(daemon):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=daemon.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
