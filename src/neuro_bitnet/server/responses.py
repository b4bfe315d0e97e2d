"""Response bodies of the OpenAI wire format for chat and text completions."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from neuro_bitnet import __version__
from neuro_bitnet.server.generation import GenerationResult

SYSTEM_FINGERPRINT = f"neuro-bitnet-{__version__}"


@dataclass
class CompletionFormatter:
    """Builds the bodies of one chat (``chat=True``) or text completion, streamed or whole."""

    model: str
    chat: bool
    include_usage: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))

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

    def whole(self, result: GenerationResult) -> dict[str, Any]:
        """The non-streamed body."""
        if self.chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "logprobs": None,
                "finish_reason": result.finish_reason,
            }
            body = self._envelope("chat.completion")
        else:
            choice = {"index": 0, "text": result.text, "logprobs": None, "finish_reason": result.finish_reason}
            body = self._envelope("text_completion")
        body["choices"] = [choice]
        body["usage"] = result.usage()
        _add_sources(body, result)
        return body

    def _chunk(self, delta_or_text: str | None, finish_reason: str | None, *, role: bool = False) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
            if delta_or_text is not None:
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

    def piece_chunk(self, text: str) -> dict[str, Any]:
        return self._chunk(text, None)

    def final_chunks(self, result: GenerationResult) -> list[dict[str, Any]]:
        """The chunk that carries finish_reason, then the usage chunk when asked for."""
        chunks = [self._chunk(None if self.chat else "", result.finish_reason)]
        _add_sources(chunks[0], result)
        if self.include_usage:
            usage = self._envelope(chunks[0]["object"])
            usage["choices"] = []
            usage["usage"] = result.usage()
            chunks.append(usage)
        return chunks


def _add_sources(body: dict[str, Any], result: GenerationResult) -> None:
    """A grounded answer's sources, as ``"neuro": {"sources": [...]}`` (numbered as cited)."""
    if result.sources is not None:
        body["neuro"] = {"sources": result.sources}
