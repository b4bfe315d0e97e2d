"""Big requests neither blow up the daemon's memory nor stall it (issue 19, item 5, server part)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.daemon_proc import FIXTURE_MODEL, DaemonProcess, has_onnx

pytestmark = pytest.mark.skipif(not FIXTURE_MODEL.is_file(), reason="fixture model missing")

BIG_PROMPT_BYTES = 3_900_000  # the prompt; the default body limit (4 MiB) lets it in
RSS_GROWTH_LIMIT = 200 * 1024 * 1024  # tokenizing that prompt used to add ~320 MB


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def roomy(tmp_path_factory) -> Iterator[DaemonProcess]:
    """A daemon with the default body limit and, when ONNX is installed, an index and embedder."""
    tmp = tmp_path_factory.mktemp("roomy")
    args = ["--ctx-size", "512", "--max-tokens", "2"]
    if has_onnx():
        from support.index_fixture import build_index

        storage, embedder = build_index(tmp)
        args += ["--storage", str(storage), "--embedder", str(embedder)]
    proc = DaemonProcess(args, tmp).wait_ready()
    yield proc
    assert proc.stop() == 0, proc.output()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_huge_prompt_is_refused_early_and_health_keeps_answering(roomy) -> None:
    before = _rss(roomy.proc.pid)
    health_codes: list[int] = []
    polling, sent = threading.Event(), threading.Event()

    def poll_health() -> None:
        with httpx.Client(base_url=roomy.url, timeout=30) as client:
            while not sent.is_set():
                health_codes.append(client.get("/health").status_code)
                polling.set()

    poller = threading.Thread(target=poll_health)
    poller.start()
    try:
        assert polling.wait(60)
        chat = {"messages": [{"role": "user", "content": "y" * BIG_PROMPT_BYTES}]}
        for path, body in (("/v1/completions", {"prompt": "x" * BIG_PROMPT_BYTES}), ("/v1/chat/completions", chat)):
            response = httpx.post(roomy.url + path, json=body, timeout=120)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["code"] == "context_length_exceeded"
    finally:
        sent.set()
        poller.join(60)
    assert health_codes and set(health_codes) == {200}
    assert _rss(roomy.proc.pid) - before < RSS_GROWTH_LIMIT
    assert httpx.post(roomy.url + "/v1/completions", json={"prompt": "Hi"}, timeout=120).status_code == 200


@pytest.mark.skipif(not has_onnx(), reason="needs onnx and onnxruntime")
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_embeddings_and_search_leave_memory_bounded(roomy) -> None:
    before = _rss(roomy.proc.pid)
    text = " ".join(f"word{i}" for i in range(512))
    for _ in range(3):
        response = httpx.post(roomy.url + "/v1/embeddings", json={"input": [text] * 32}, timeout=300)
        assert response.status_code == 200, response.text
        assert len(response.json()["data"]) == 32
        found = httpx.post(roomy.url + "/v1/search", json={"query": text[:2000], "top_k": 5}, timeout=300)
        assert found.status_code == 200, found.text
    assert _rss(roomy.proc.pid) - before < RSS_GROWTH_LIMIT


def test_retrieval_work_has_a_bounded_queue() -> None:
    from neuro_bitnet.server.retrieval_service import RetrievalBusyError, RetrievalService

    service = RetrievalService(max_pending=2)  # no index, no embedder: only its queue is used here
    release = threading.Event()

    async def run() -> None:
        first = asyncio.ensure_future(service._run(release.wait, 60))
        second = asyncio.ensure_future(service._run(lambda: None))
        await asyncio.sleep(0)  # both are now pending (the second waits behind the first)
        assert service.pending == 2
        with pytest.raises(RetrievalBusyError):
            await service._run(lambda: None)
        release.set()
        await asyncio.gather(first, second)
        assert service.pending == 0
        await service._run(lambda: None)  # room again

    try:
        asyncio.run(run())
    finally:
        release.set()
        service.close()
