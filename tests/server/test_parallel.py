"""`neuro serve --parallel N`: continuous batching in the real daemon, through real clients.

A daemon with 3 slots and a context long enough that a "long" answer runs far longer than any
test step (it only ends when its client hangs up): requests join the running batch, leave it when
their client goes, and queue beyond the slots; greedy answers are the same as alone.
"""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import jsonschema
import pytest

openai = pytest.importorskip("openai")

from support.daemon_proc import API_KEY, FIXTURE_MODEL, DaemonProcess  # noqa: E402
from support.waiting import wait_for  # noqa: E402

SLOTS = 3
CTX = 32768  # ~30000 decode steps of the fixture model: a long answer outlives every test step
MAX_QUEUE = 16  # the concurrent test sends 16 requests at once
LONG = {"prompt": "Hello", "max_tokens": CTX - 8, "temperature": 0, "stream": True}
AUTH = {"Authorization": f"Bearer {API_KEY}"}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer", "minimum": 0,
                                                                        "maximum": 99}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 10}}, "required": ["city"],
    "additionalProperties": False}}}


@pytest.fixture(scope="module")
def batching(tmp_path_factory):
    if not FIXTURE_MODEL.is_file():
        pytest.skip(f"fixture model missing: {FIXTURE_MODEL}")
    proc = DaemonProcess(["--api-key", API_KEY, "--parallel", str(SLOTS), "--ctx-size", str(CTX),
                          "--max-queue", str(MAX_QUEUE), "--max-tokens", "16"],
                         tmp_path_factory.mktemp("parallel")).wait_ready()
    yield proc
    assert proc.stop() == 0, proc.output()


@pytest.fixture(scope="module")
def client(batching):
    return openai.OpenAI(base_url=batching.url + "/v1", api_key=API_KEY, max_retries=0, timeout=300)


def _health(daemon) -> dict:
    return httpx.get(daemon.url + "/health", headers=AUTH, timeout=60).json()


class RawRequest:
    """A completion request on its own socket, so that the test decides when its client goes."""

    def __init__(self, daemon, body: dict) -> None:
        address = urlsplit(daemon.url)
        payload = json.dumps(body).encode()
        head = (f"POST /v1/completions HTTP/1.1\r\nHost: {address.netloc}\r\n"
                f"Authorization: {AUTH['Authorization']}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode()
        self.sock = socket.create_connection((address.hostname, address.port), timeout=120)
        self.sock.sendall(head + payload)

    def first_chunk(self) -> bytes:
        """Read until the first streamed chunk: the request is running."""
        seen = b""
        while b"data: " not in seen:
            data = self.sock.recv(65536)
            assert data, "the server closed the stream: " + seen.decode(errors="replace")
            seen += data
        assert seen.startswith(b"HTTP/1.1 200"), seen[:200]
        return seen

    def hang_up(self) -> None:
        self.sock.close()


def _fill_slots(daemon, n: int) -> list[RawRequest]:
    running = [RawRequest(daemon, LONG) for _ in range(n)]
    for r in running:
        r.first_chunk()
    return running


def _hang_up_all(daemon, requests: list[RawRequest]) -> None:
    for r in requests:
        r.hang_up()
    assert wait_for(lambda: _health(daemon)["queue"]["running"] == 0 and _health(daemon)["queue"]["waiting"] == 0)


# -- the answers --------------------------------------------------------------------------------
def _asks() -> list[tuple[str, dict]]:
    """Requests of different kinds and lengths: completions, chats, streamed or not, JSON, a tool."""
    chat = [{"role": "user", "content": "Tell me about the sea"}]
    return [
        ("completion", {"prompt": "Once upon a time", "max_tokens": 40}),
        ("completion", {"prompt": "abc def ghi " * 20, "max_tokens": 12, "stream": True}),
        ("chat", {"messages": chat, "max_tokens": 30}),
        ("chat", {"messages": chat + [{"role": "assistant", "content": "It is big."},
                                      {"role": "user", "content": "And?"}], "max_tokens": 25, "stream": True}),
        ("chat", {"messages": chat, "max_tokens": 60, "response_format": {
            "type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}}),
        ("chat", {"messages": [{"role": "user", "content": "Weather in Paris?"}], "max_tokens": 60,
                  "tools": [TOOL], "tool_choice": "required"}),
        ("completion", {"prompt": "The list:", "max_tokens": 1}),
        ("completion", {"prompt": "x" * 300, "max_tokens": 20, "stop": ["\n\n"]}),
    ]


def _answer(client, kind: str, body: dict) -> tuple:
    body = {"model": "default", "temperature": 0, **body}
    stream = body.pop("stream", False)
    if kind == "completion":
        if not stream:
            r = client.completions.create(**body)
            return r.choices[0].text, r.choices[0].finish_reason, r.usage.completion_tokens
        parts = list(client.completions.create(stream=True, **body))
        return "".join(c.choices[0].text for c in parts if c.choices), parts[-1].choices[0].finish_reason, None
    if not stream:
        r = client.chat.completions.create(**body)
        message = r.choices[0].message
        calls = [(c.function.name, c.function.arguments) for c in message.tool_calls or []]
        return message.content, calls, r.choices[0].finish_reason, r.usage.completion_tokens
    parts = list(client.chat.completions.create(stream=True, **body))
    text = "".join(c.choices[0].delta.content or "" for c in parts if c.choices)
    return text, [], parts[-1].choices[0].finish_reason if parts[-1].choices else None, None


def test_concurrent_greedy_requests_get_what_each_gets_alone(client) -> None:
    asks = _asks()
    alone = [_answer(client, kind, body) for kind, body in asks]
    with ThreadPoolExecutor(len(asks) * 2) as pool:  # twice each: more requests than slots, queued in order
        together = list(pool.map(lambda a: _answer(client, *a), asks + asks))
    assert together == alone + alone
    person = json.loads(alone[4][0])
    jsonschema.validate(person, PERSON)
    (name, arguments), = alone[5][1]
    assert name == "get_weather"
    jsonschema.validate(json.loads(arguments), TOOL["function"]["parameters"])


def test_a_request_joins_the_running_batch_and_a_client_that_goes_frees_its_slot(batching, client) -> None:
    before = _health(batching)
    running = _fill_slots(batching, SLOTS)  # every slot busy with an answer that does not end by itself
    assert _health(batching)["queue"]["running"] == SLOTS
    running[0].hang_up()  # frees its slot at the next step
    assert wait_for(lambda: _health(batching)["cancelled"] == before["cancelled"] + 1)
    short = client.completions.create(model="default", prompt="Hi", max_tokens=3, temperature=0)
    assert short.choices[0].text is not None and short.usage.completion_tokens >= 1
    # answered beside the two long ones, which still run once the short one's job has ended
    assert wait_for(lambda: _health(batching)["completed"] == before["completed"] + 2)  # + the cancelled
    assert _health(batching)["queue"]["running"] == SLOTS - 1
    _hang_up_all(batching, running[1:])


def test_requests_beyond_the_slots_wait_and_past_max_queue_get_503(batching) -> None:
    running = _fill_slots(batching, SLOTS)
    waiting = [RawRequest(batching, LONG) for _ in range(MAX_QUEUE)]
    assert wait_for(lambda: _health(batching)["queue"]["waiting"] == MAX_QUEUE)
    refused = httpx.post(batching.url + "/v1/completions", headers=AUTH, json={"prompt": "Hi", "max_tokens": 2},
                         timeout=60)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "server_overloaded"
    waiting[0].hang_up()  # a queued request whose client goes is dropped before it runs
    assert wait_for(lambda: _health(batching)["queue"]["waiting"] == MAX_QUEUE - 1)
    running[0].hang_up()  # its slot goes to the next in line
    waiting[1].first_chunk()
    _hang_up_all(batching, running[1:] + waiting[1:])


def test_a_request_that_cannot_fit_its_slot_is_a_400(client) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="default", prompt=[1] * CTX, max_tokens=2)
    assert info.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="default", prompt="Hi", max_tokens=CTX + 1)
    assert info.value.body["code"] == "max_tokens_too_large"


def test_health_and_metrics_report_the_slots(batching) -> None:
    assert _health(batching)["parallel"] == SLOTS
    metrics = httpx.get(batching.url + "/metrics", headers=AUTH, timeout=60).text
    assert f"neuro_parallel_slots {float(SLOTS)}" in metrics
