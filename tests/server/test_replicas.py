"""Two `neuro serve` replicas behind a real haproxy (docs/deploy.md), sharing one index on a real
PostgreSQL + pgvector server, all on loopback: requests through the balancer reach both, both
search the one index (also what is indexed while they run), the daemons' Host check still works
behind it, and when one replica is killed mid-answer every request still gets its answer."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from support.daemon_proc import FIXTURE_MODEL, DaemonProcess, has_onnx
from support.haproxy import HAProxy, haproxy_binary
from support.index_fixture import build_index

KEY = "replica-key-5678"
PUBLIC_NAME = "neuro.example.test"  # the name clients use for the balancer (--allowed-host)
BODY = {"model": "default", "prompt": "Hello", "max_tokens": 8, "temperature": 0}
TIMEOUT = 300  # seconds per request: generous, the machine may be busy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(haproxy_binary() is None, reason="haproxy is not installed (Debian: apt-get install "
                       "haproxy; .ci/run installs it when run as root)"),
]


@pytest.fixture
def shared_index(tmp_path: Path, pg_server) -> tuple[str, Path]:
    """(postgresql:// URL, embedder dir) of an index of three documents in a fresh database."""
    if not has_onnx():
        pytest.skip("the shared index needs onnxruntime and onnx")
    storage, embedder = build_index(tmp_path / "index-build", pg_server.new_database())
    return str(storage), embedder


@pytest.fixture
def replicas(tmp_path: Path, shared_index) -> Iterator[tuple[dict[str, DaemonProcess], HAProxy]]:
    """Replicas ``a`` and ``b`` (same model, key, allowed name and PostgreSQL index) and haproxy
    in front of them."""
    if not FIXTURE_MODEL.is_file():
        pytest.skip(f"fixture model missing: {FIXTURE_MODEL}")
    storage, embedder = shared_index
    args = ["--api-key", KEY, "--allowed-host", PUBLIC_NAME, "--ctx-size", "256",
            "--storage", storage, "--embedder", str(embedder)]
    daemons = {name: DaemonProcess(args, tmp_path / name) for name in ("a", "b")}
    proxy = None
    try:
        for daemon in daemons.values():
            daemon.wait_ready()
        backends = {name: d.url.removeprefix("http://") for name, d in daemons.items()}
        proxy = HAProxy(tmp_path / "haproxy", backends, KEY)
        proxy.wait_status({"a": "UP", "b": "UP"})
        yield daemons, proxy
    finally:
        if proxy is not None:
            proxy.stop()
        for daemon in daemons.values():
            daemon.stop()


def _submitted(daemon: DaemonProcess) -> int:
    return httpx.get(daemon.url + "/health", headers=_auth(), timeout=30).json()["submitted"]


def _auth(host: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {KEY}"}
    if host is not None:
        headers["Host"] = host
    return headers


def _complete(url: str) -> tuple[int, str]:
    response = httpx.post(url + "/v1/completions", headers=_auth(), json=BODY, timeout=TIMEOUT)
    return response.status_code, response.json()["choices"][0]["text"] if response.status_code == 200 else response.text


def test_the_host_check_works_behind_the_balancer(replicas) -> None:
    _, proxy = replicas
    for host in (PUBLIC_NAME, f"{PUBLIC_NAME}:443", f"127.0.0.1:{proxy.port}"):
        response = httpx.get(proxy.url + "/health", headers=_auth(host), timeout=30)
        assert response.status_code == 200, (host, response.text)
    # haproxy passes the client's Host on: a rebinding name is refused by the replica behind it.
    refused = httpx.post(proxy.url + "/v1/completions", headers=_auth("rebind.attacker.example"), json=BODY,
                         timeout=30)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "host_not_allowed"
    assert httpx.get(proxy.url + "/health", timeout=30).status_code == 401  # and the key is still required


def test_requests_reach_both_replicas_and_streams_pass_through(replicas) -> None:
    daemons, proxy = replicas
    before = {name: _submitted(d) for name, d in daemons.items()}
    reference = _complete(daemons["b"].url)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: _complete(proxy.url), range(8)))
    assert results == [reference] * 8, proxy.output()[-6000:]  # greedy: both replicas give the same answer
    assert all(_submitted(d) > before[name] for name, d in daemons.items())  # round robin used both

    pieces, done = [], False
    with httpx.stream("POST", proxy.url + "/v1/completions", headers=_auth(), json={**BODY, "stream": True},
                      timeout=TIMEOUT) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                pieces += [c["text"] for c in json.loads(line[6:])["choices"]]
    assert done and "".join(pieces) == reference[1]


def _search(url: str, query: str) -> list[str]:
    response = httpx.post(url + "/v1/search", headers=_auth(), json={"query": query, "top_k": 3}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return [Path(hit["path"]).name for hit in response.json()["data"]]


def test_both_replicas_search_the_one_postgresql_index(replicas, shared_index, tmp_path: Path) -> None:
    from neuro_bitnet.retrieval.embedders import OnnxEmbedder
    from neuro_bitnet.retrieval.indexer import index_paths
    from neuro_bitnet.retrieval.store import open_store

    daemons, proxy = replicas
    for daemon in daemons.values():
        assert _search(daemon.url, "dog barks")[0] == "pets.md"
    # A document indexed into the shared store while the replicas run is found by both of them.
    storage, embedder = shared_index
    new_docs = tmp_path / "new-docs"
    new_docs.mkdir()
    (new_docs / "volcano.md").write_text("The volcano erupted and lava covered the island of Krakatoa.\n")
    with open_store(storage) as store:
        index_paths([new_docs], store, OnnxEmbedder(embedder))
    for daemon in daemons.values():
        assert _search(daemon.url, "volcano lava Krakatoa")[0] == "volcano.md", daemon.output()[-3000:]
    with ThreadPoolExecutor(4) as pool:  # and through the balancer, whichever replica answers
        assert all(hits[0] == "volcano.md" for hits in pool.map(lambda _: _search(proxy.url, "volcano lava"),
                                                                 range(6)))


def test_every_request_is_answered_when_a_replica_is_killed_mid_answer(replicas) -> None:
    daemons, proxy = replicas
    reference = _complete(daemons["b"].url)
    a = daemons["a"]
    # Replica a holds its answers after their first piece (a test pause point), so requests are
    # in progress on it when it is killed: haproxy must send them again to b.
    with ThreadPoolExecutor(4) as pool, a.pauses.hold("generation"):
        before_kill = pool.map(lambda _: _complete(proxy.url), range(8))
        a.pauses.wait_reached("generation", alive=lambda: a.proc.poll() is None)
        a.proc.kill()
        a.proc.wait()
        after_kill = pool.map(lambda _: _complete(proxy.url), range(8))  # some sent before the checks notice
        results = list(before_kill) + list(after_kill)
    assert results == [reference] * 16, proxy.output()[-6000:]
    proxy.wait_status({"a": "DOWN", "b": "UP"})
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda _: _complete(proxy.url), range(4))) == [reference] * 4


def _refuses_connections(daemon: DaemonProcess) -> bool:
    host, port = daemon.url.removeprefix("http://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_replica_stopped_with_sigterm_finishes_its_answers_while_the_other_takes_new_ones(replicas) -> None:
    daemons, proxy = replicas
    reference = _complete(daemons["b"].url)
    a = daemons["a"]
    with ThreadPoolExecutor(4) as pool, a.pauses.hold("generation"):
        in_progress = pool.map(lambda _: _complete(proxy.url), range(4))
        a.pauses.wait_reached("generation", alive=lambda: a.proc.poll() is None)
        a.terminate()  # what `neuro daemon stop` sends
        deadline = time.monotonic() + 120
        while not _refuses_connections(a):  # it stops accepting at once...
            assert time.monotonic() < deadline, "the stopping replica still accepts connections"
            time.sleep(0.05)
        assert a.proc.poll() is None  # ...and waits for its answers in progress
        new = [_complete(proxy.url) for _ in range(4)]  # the other replica takes these
        a.pauses.release("generation")
        assert list(in_progress) + new == [reference] * 8, proxy.output()[-6000:]
    assert a.proc.wait(120) == 0
    # Every request of this test went through haproxy while a held its answers, so a's answers
    # (one log line each) were finished after the SIGTERM, not cut and sent again to b.
    assert any(" replicas/a " in line and " 200 " in line for line in proxy.output().splitlines()), \
        proxy.output()[-6000:]
    proxy.wait_status({"a": "DOWN", "b": "UP"})
