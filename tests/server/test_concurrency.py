"""Many clients, one model: fair queueing, correct answers under load, cancellation on disconnect."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from support.daemon_proc import API_KEY, CTX_SIZE, FIXTURE_MODEL, DaemonProcess
from support.waiting import wait_for

PROMPTS = ["Hello", "Once upon a time", "abc def ghi", "The list:"]
N_CLIENTS = 32
MAX_TOKENS = 6


def _body(prompt: str, stream: bool) -> dict:
    return {"model": "default", "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": stream}


async def _one(client: httpx.AsyncClient, prompt: str, stream: bool) -> str:
    if not stream:
        response = await client.post("/v1/completions", json=_body(prompt, False))
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["text"]
    pieces, done = [], False
    async with client.stream("POST", "/v1/completions", json=_body(prompt, True)) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                event = json.loads(line[6:])
                assert "error" not in event, event
                pieces += [c["text"] for c in event["choices"]]
    assert done, "stream ended without [DONE]"
    return "".join(pieces)


def test_32_concurrent_clients_get_complete_correct_answers(daemon, auth) -> None:
    async def run() -> tuple[dict[str, str], list[tuple[str, str]]]:
        limits = httpx.Limits(max_connections=N_CLIENTS)
        async with httpx.AsyncClient(base_url=daemon.url, headers=auth, timeout=300, limits=limits) as client:
            reference = {p: await _one(client, p, False) for p in PROMPTS}  # one at a time
            jobs = [(PROMPTS[i % len(PROMPTS)], i % 2 == 0) for i in range(N_CLIENTS)]
            answers = await asyncio.gather(*(_one(client, p, s) for p, s in jobs))
            return reference, [(p, a) for (p, _), a in zip(jobs, answers)]

    reference, answers = asyncio.run(run())
    assert len(answers) == N_CLIENTS
    for prompt, answer in answers:
        assert answer == reference[prompt]  # greedy answers do not depend on what else is queued


def _health(daemon, auth) -> dict:
    return httpx.get(daemon.url + "/health", headers=auth, timeout=30).json()


def _hangups(daemon, auth) -> float:
    """How many completion requests ended because their client went away (status 499)."""
    for line in httpx.get(daemon.url + "/metrics", headers=auth, timeout=30).text.splitlines():
        if line.startswith("neuro_http_requests_total{") and 'route="/v1/completions"' in line \
                and 'status="499"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _hang_up_while_queued(daemon, auth, body: dict) -> None:
    """Queue a request behind a held one (raw socket), then close the socket before its turn."""
    import socket
    from concurrent.futures import ThreadPoolExecutor
    from urllib.parse import urlsplit

    address = urlsplit(daemon.url)
    payload = json.dumps(body).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: {address.netloc}\r\n"
            f"Authorization: {auth['Authorization']}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()
    submitted, hangups = _health(daemon, auth)["submitted"], _hangups(daemon, auth)
    with ThreadPoolExecutor(1) as pool, daemon.pauses.hold("generation"):
        # The request ahead keeps the model busy: held after its first token until released.
        ahead = pool.submit(lambda: httpx.post(daemon.url + "/v1/completions", headers=auth, json=body,
                                               timeout=300).status_code)
        daemon.pauses.wait_reached("generation")
        with socket.create_connection((address.hostname, address.port)) as sock:
            sock.sendall(head + payload)
            assert wait_for(lambda: _health(daemon, auth)["submitted"] == submitted + 2, timeout=60)
            assert _health(daemon, auth)["queue"]["waiting"] == 1  # ours has not started
        assert wait_for(lambda: _hangups(daemon, auth) > hangups)  # the server saw the hang-up
        daemon.pauses.release("generation")
        assert ahead.result() == 200


@pytest.fixture(scope="module")
def one_slot_daemon(tmp_path_factory) -> Iterator[DaemonProcess]:
    """A daemon with one KV slot: a second request waits in the queue (the shared one batches)."""
    if not FIXTURE_MODEL.is_file():
        pytest.skip(f"fixture model missing: {FIXTURE_MODEL}")
    args = ["--api-key", API_KEY, "--ctx-size", str(CTX_SIZE), "--parallel", "1"]
    proc = DaemonProcess(args, tmp_path_factory.mktemp("one-slot")).wait_ready()
    yield proc
    assert proc.stop() == 0, proc.output()


@pytest.mark.slow
@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_disconnects_cancels_its_generation(one_slot_daemon, auth, stream) -> None:
    daemon = one_slot_daemon
    before = _health(daemon, auth)["cancelled"]
    body = {"prompt": "Hello", "max_tokens": 505, "temperature": 0, "stream": stream}
    if stream:  # running: stopped between two tokens
        # Held after its first piece until cancelled: still running when the client hangs up.
        with daemon.pauses.hold("generation"):
            with httpx.Client(base_url=daemon.url, headers=auth, timeout=120) as client:
                with client.stream("POST", "/v1/completions", json=body) as response:
                    assert response.status_code == 200
                    for line in response.iter_lines():
                        if line.startswith("data: "):
                            daemon.pauses.wait_reached("generation")
                            break  # got the first chunk and the generation is held; now hang up
            assert wait_for(lambda: _health(daemon, auth)["cancelled"] > before)
    else:  # queued: dropped without running
        _hang_up_while_queued(daemon, auth, body)
    assert wait_for(lambda: _health(daemon, auth)["cancelled"] > before)
    assert wait_for(lambda: not _health(daemon, auth)["queue"]["busy"])
    ok = httpx.post(daemon.url + "/v1/completions", headers=auth, json={"prompt": "Hi", "max_tokens": 2})
    assert ok.status_code == 200
