"""Response bodies of the OpenAI wire format for chat and text completions."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from neuro_bitnet import __version__
from neuro_bitnet.server.generation import ServedAnswer
from neuro_bitnet.server.structured import ToolPlan, ToolStream

SYSTEM_FINGERPRINT = f"neuro-bitnet-{__version__}"


@dataclass
class CompletionFormatter:
    """Builds the bodies of one chat (``chat=True``) or text completion, streamed or whole."""

    model: str
    chat: bool
    include_usage: bool = False
    tools: ToolPlan | None = None  # the reply may be a tool call (chat only)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))
    _stream: ToolStream | None = field(default=None, init=False, repr=False)

    @property
    def _id(self) -> str:
        return ("chatcmpl-" if self.chat else "cmpl-") + self.id

    def _envelope(self, obj: str) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }

    def whole(self, result: ServedAnswer) -> dict[str, Any]:
        """The non-streamed body."""
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": result.text}
            finish_reason = result.finish_reason
            if self.tools is not None:
                message["content"], calls, finish_reason = self.tools.parse(result.text, finish_reason)
                if calls:
                    message["tool_calls"] = calls
            choice: dict[str, Any] = {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            body = self._envelope("chat.completion")
        else:
            choice = {"index": 0, "text": result.text, "logprobs": None, "finish_reason": result.finish_reason}
            body = self._envelope("text_completion")
        body["choices"] = [choice]
        body["usage"] = result.usage()
        body["timings"] = result.timings()
        _add_sources(body, result)
        return body

    def _chunk(self, delta_or_text: str | dict[str, Any] | None, finish_reason: str | None, *,
               role: bool = False) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
            if isinstance(delta_or_text, dict):
                delta.update(delta_or_text)
            elif delta_or_text is not None:
                delta["content"] = delta_or_text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            body = self._envelope("chat.completion.chunk")
        else:
            choice = {"index": 0, "text": delta_or_text or "", "logprobs": None, "finish_reason": finish_reason}
            body = self._envelope("text_completion")
        body["choices"] = [choice]
        if self.include_usage:
            body["usage"] = None
        return body

    def first_chunk(self) -> dict[str, Any] | None:
        """Chat streams open with the assistant role and empty content, as OpenAI's do."""
        return self._chunk("", None, role=True) if self.chat else None

    def piece_chunks(self, text: str) -> list[dict[str, Any]]:
        """The chunks of one streamed piece (none while a tool call's start is incomplete)."""
        if self.tools is None:
            return [self._chunk(text, None)]
        return [self._chunk(delta, None) for delta in self._tool_stream.push(text)]

    @property
    def _tool_stream(self) -> ToolStream:
        if self._stream is None:
            assert self.tools is not None
            self._stream = ToolStream(self.tools)
        return self._stream

    def final_chunks(self, result: ServedAnswer) -> list[dict[str, Any]]:
        """The chunk that carries finish_reason, then the usage chunk when asked for."""
        finish_reason = result.finish_reason
        chunks = []
        if self.tools is not None:
            deltas, finish_reason = self._tool_stream.finish(finish_reason)
            chunks = [self._chunk(delta, None) for delta in deltas]
        chunks.append(self._chunk(None if self.chat else "", finish_reason))
        _add_sources(chunks[-1], result)
        if self.include_usage:
            usage = self._envelope(chunks[-1]["object"])
            usage["choices"] = []
            usage["usage"] = result.usage()
            usage["timings"] = result.timings()
            chunks.append(usage)
        return chunks


def _add_sources(body: dict[str, Any], result: ServedAnswer) -> None:
    """A grounded answer's sources, as ``"neuro": {"sources": [...]}`` (numbered as cited)."""
    if result.sources is not None:
        body["neuro"] = {"sources": result.sources}
