"""Request bodies of the OpenAI-compatible API: parsing, type checks and limits (those of the
sampling values are the server's one table, ``limits.SAMPLING_LIMITS``).

Fields the server does not implement but that clients send routinely (``user``,
``presence_penalty``, ``logit_bias``...) are accepted and ignored; fields that would change the
answer's shape in ways the server cannot honour (``n > 1``, ``best_of > 1``) are rejected.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from neuro_bitnet.engine.options import DEFAULT_SAMPLING as ENGINE_DEFAULTS
from neuro_bitnet.server.errors import APIError, bad_request

MAX_STOP_SEQUENCES = 16
MAX_EMBEDDING_INPUTS = 256

# Sampling defaults of the engine, used when a request leaves a field out.
DEFAULT_SAMPLING: dict[str, Any] = {
    name: getattr(ENGINE_DEFAULTS, name) for name in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty")
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class StreamOptions(_Body):
    include_usage: bool = False


class _Generation(_Body):
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    # Their ranges are checked with the other dialects' (limits.SAMPLING_LIMITS, in GenerationSpec).
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1)
    translate: bool | None = None

    def stop_list(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise bad_request(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed", "stop")
        return [s for s in stops if s]

    def sampling(self) -> dict[str, Any]:
        """Engine keyword arguments: the request's values over the engine defaults."""
        chosen = {
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "min_p": self.min_p,
            "repeat_penalty": self.repeat_penalty,
        }
        out = {k: (DEFAULT_SAMPLING[k] if v is None else v) for k, v in chosen.items()}
        out["seed"] = self.seed
        return out

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ContentPart(_Body):
    type: str
    text: str | None = None


class FunctionCall(_Body):
    name: str
    arguments: str


class ToolCall(_Body):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # a tool result: the call it answers

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        pieces = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise bad_request(f"content parts of type {part.type!r} are not supported (text only)", "messages")
            pieces.append(part.text)
        return "".join(pieces)


_FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class FunctionDef(_Body):
    name: str = Field(pattern=_FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Body):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(_Body):
    name: str = Field("response", pattern=_FUNCTION_NAME)
    description: str | None = None
    schema_: dict[str, Any] | bool | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class NeuroOptions(BaseModel):
    """The ``"neuro"`` object of a chat request: what this server adds to the OpenAI API."""

    model_config = ConfigDict(extra="forbid", strict=True)
    grounded: bool = False  # answer from the --storage index, citing its passages as [n]


class ChatRequest(_Generation):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None  # accepted; a reply holds at most one call
    neuro: NeuroOptions | None = None

    def grounded(self) -> bool:
        return self.neuro is not None and self.neuro.grounded

    def check_tool_messages(self) -> None:
        """Tool results come back only in conversations that offer tools."""
        if not self.tools and any(m.role == "tool" for m in self.messages):
            raise bad_request("'tool' messages are not supported without 'tools' in the request", "messages")

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_Generation):
    prompt: str | list[str] | list[int]
    best_of: int | None = Field(None, ge=1, le=1)
    echo: bool = False

    def prompt_value(self) -> str | list[int]:
        """The single prompt as text or token ids (batches of prompts are not supported)."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return prompt
        if not prompt:
            raise bad_request("prompt is empty", "prompt")
        if all(isinstance(p, str) for p in prompt):
            if len(prompt) != 1:
                raise bad_request("send one prompt per request (prompt batches are not supported)", "prompt")
            return prompt[0]  # type: ignore[return-value]
        return list(prompt)  # type: ignore[arg-type]

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


class EmbeddingRequest(_Body):
    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    input_type: Literal["document", "query"] = "document"  # e5-style embedders prefix them differently

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else list(self.input)
        if not texts:
            raise bad_request("input is empty", "input")
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise bad_request(f"at most {MAX_EMBEDDING_INPUTS} inputs per request", "input")
        return texts


class SearchRequest(_Body):
    query: str = Field(min_length=1)
    top_k: int = Field(5, ge=1, le=50)


BodyT = TypeVar("BodyT", bound=BaseModel)


# A JSON escape that may encode half of a UTF-16 surrogate pair (raw UTF-8 cannot encode one).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_json(raw: bytes) -> dict[str, Any]:
    """Decode a JSON object body, or raise a 400 (never a 5xx, whatever the bytes)."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON ({exc})", code="invalid_json") from None
    except RecursionError:
        raise APIError(400, "the request body is nested too deeply", code="invalid_json") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise APIError(400, f"the request body has a value out of range ({exc})", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    if _SURROGATE_ESCAPE.search(raw) and has_lone_surrogate(data):
        raise APIError(400, "the request body contains a lone UTF-16 surrogate escape (\\udXXX), "
                       "which is not valid Unicode text", code="invalid_json")
    return data


def has_lone_surrogate(data: Any) -> bool:
    """True if a string (key or value) anywhere in ``data`` cannot be encoded as UTF-8."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def validate(model: type[BodyT], data: dict[str, Any]) -> BodyT:
    """Check ``data`` against ``model``; the first problem becomes a 400 naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [str(p) for p in error.get("loc", ())]
        param = loc[0] if loc else None
        where = ".".join(p for p in loc if not _is_type_tag(p)) or "body"
        msg = error.get("msg", "invalid value")
        if error.get("type") == "missing":
            msg = "is required"
        raise bad_request(f"invalid '{where}': {msg}", param) from None


def _is_type_tag(loc_part: str) -> bool:
    """Pydantic names union branches (``str``, ``list[str]``) in error locations; hide them."""
    return loc_part in {"str", "int", "float", "bool"} or "[" in loc_part or loc_part.startswith("function-")
