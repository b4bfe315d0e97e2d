"""MCP over stdio with an answer for every line: the SDK's transport, behind a line check.

The SDK's stdio transport drops lines it cannot parse without a reply, so a client waits
forever on a malformed request or one carrying a lone UTF-16 surrogate (``"\\ud800"``, valid
JSON but not valid text). Each line is checked here first: unparsable JSON gets a ``-32700``
parse error, a message that is not JSON-RPC a ``-32600``, a tool call with a lone surrogate an
error result (other requests a ``-32602``); good lines pass on to the SDK unchanged.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any, AsyncIterator

import anyio
import mcp_types as types
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage

from neuro_bitnet.server.schemas import has_lone_surrogate

SURROGATE_MESSAGE = ("the request contains a lone UTF-16 surrogate escape (\\udXXX), which is not valid "
                     "Unicode text; send the text as valid UTF-8")


def _error(msg_id: Any, code: int, message: str) -> types.JSONRPCError:
    return types.JSONRPCError(jsonrpc="2.0", id=msg_id, error=types.ErrorData(code=code, message=message))


def _request_id(data: Any) -> Any:
    """The id of a request (None for notifications and garbage)."""
    if isinstance(data, dict) and "method" in data and isinstance(data.get("id"), (int, str)) \
            and not isinstance(data.get("id"), bool):
        return data["id"]
    return None


def check_line(line: str) -> types.JSONRPCMessage | None | bool:
    """What to do with one input line: True to pass it on, a message to reply with, or None to
    drop it (a bad notification, which must not be answered)."""
    if not line.strip():
        return None
    try:
        data = json.loads(line)
    except (ValueError, RecursionError) as exc:
        return _error(None, types.PARSE_ERROR, f"Parse error: {exc}")
    msg_id = _request_id(data)
    if has_lone_surrogate(data):
        if msg_id is None:
            return None
        if data.get("method") == "tools/call":
            result = {"content": [{"type": "text", "text": SURROGATE_MESSAGE}], "isError": True}
            return types.JSONRPCResponse(jsonrpc="2.0", id=msg_id, result=result)
        return _error(msg_id, types.INVALID_PARAMS, SURROGATE_MESSAGE)
    try:
        types.jsonrpc_message_adapter.validate_python(data, by_name=False)
    except Exception as exc:  # pydantic's ValidationError: not a JSON-RPC message
        first = str(exc).splitlines()[0]
        return _error(msg_id, types.INVALID_REQUEST, f"Invalid request: {first}")
    return True


class _StdinText(io.TextIOWrapper):
    """stdin as UTF-8 text (bad bytes replaced); closing it leaves the process's stdin open."""

    def close(self) -> None:
        try:
            self.detach()
        except ValueError:
            pass


class CheckedLines:
    """stdin's lines for the SDK transport; replies to bad lines go out on the same writer."""

    def __init__(self) -> None:
        self._stdin = anyio.wrap_file(_StdinText(sys.stdin.buffer, encoding="utf-8", errors="replace"))
        self._replies: Any = None
        self._attached = anyio.Event()

    def attach(self, write_stream: Any) -> None:
        """Where replies go: the transport's write stream (one writer, so frames never tear)."""
        self._replies = write_stream
        self._attached.set()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        async for line in self._stdin:
            verdict = check_line(line)
            if verdict is True:
                yield line
            elif verdict is not None:
                await self._attached.wait()
                await self._replies.send(SessionMessage(verdict))


async def serve(server: Any) -> None:
    """Run an ``MCPServer`` over stdio with the line check."""
    lines = CheckedLines()
    async with stdio_server(stdin=lines) as (read_stream, write_stream):  # type: ignore[arg-type]
        lines.attach(write_stream)
        lowlevel = server._lowlevel_server  # MCPServer.run_stdio_async does the same with the SDK's reader
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
