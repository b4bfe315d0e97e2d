"""A stand-in neuro daemon on 127.0.0.1 whose "model" is predictable, for CLI tests.

It speaks the parts of the daemon's API the CLI's daemon backend uses (`/health`, `/v1/models`,
streamed `/v1/chat/completions`). Asked to translate ("Translate this X text into Y:\\n\\n..."),
it answers like a small model does: a label line, then the text upper-cased, streamed in small
pieces. "list N" is answered with N numbered lines; any other request with "ANSWER: " and the
last user message. Every request body is kept in `requests`.
"""

from __future__ import annotations

import json
import re
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

TRANSLATE = re.compile(r"^Translate this \w+ text into \w+:\n\n(.*)$", re.S)
LIST = re.compile(r"^list (\d+)$")


def list_answer(n: int) -> str:
    """The answer to "list N"."""
    return "Here is the list:\n\n" + "\n".join(f"{i}. Item number {i} of the **long** list" for i in range(1, n + 1))


def reply_to(messages: list[dict[str, str]]) -> str:
    """What the stub answers to ``messages``."""
    user = [m["content"] for m in messages if m["role"] == "user"][-1]
    match = TRANSLATE.match(user)
    if match:
        return "Translation:\n" + match.group(1).upper()
    if LIST.match(user):
        return list_answer(int(LIST.match(user).group(1)))
    return "ANSWER: " + user


class _Handler(BaseHTTPRequestHandler):
    server: "ChatStub"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _json(self, data: dict) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._json({"status": "ok", "model": "stub", "ctx_size": 4096})
        elif self.path == "/v1/models":
            self._json({"object": "list", "data": [{"id": "stub", "aliases": []}]})
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length))
        self.server.requests.append(body)
        text = reply_to(body["messages"])
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i in range(0, len(text), 4):
            event = {"choices": [{"index": 0, "delta": {"content": text[i:i + 4]}, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
        self.close_connection = True


class ChatStub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def chats(self) -> list[list[dict[str, str]]]:
        """The message lists of requests that were not translations."""
        return [r["messages"] for r in self.requests if not TRANSLATE.match(r["messages"][-1]["content"])]


@contextmanager
def chat_stub() -> Iterator[ChatStub]:
    server = ChatStub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
