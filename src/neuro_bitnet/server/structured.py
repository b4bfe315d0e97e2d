"""Structured output on chat completions: ``response_format`` (JSON) and ``tools`` (function calls).

Both run on the engine's constrained sampler (``engine.constrained``), so the output is valid
whatever the model, even a random one:

- ``response_format: {"type": "json_object"}``: any JSON object; ``{"type": "json_schema",
  "json_schema": {"schema": ...}}``: JSON matching the schema (``strict`` or not: the sampler
  cannot produce anything else).
- Tools: a call is the JSON object ``{"name": NAME, "arguments": {...}}`` whose arguments match
  the function's ``parameters``. ``tool_choice: "required"`` (or a named function) constrains the
  whole reply to a call (of that function). ``"auto"`` constrains the reply to either a call or
  text that does not start with ``{``: the first character decides. ``"none"`` is plain text and
  the tools are not shown to the model. One call per reply (``parallel_tool_calls`` accepted).
  The tools are described to the model in a system message; earlier calls are rendered as the
  assistant's JSON and tool results as user turns ("Result of NAME: ..."), since the chat
  templates of BitNet models know only system, user and assistant.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from neuro_bitnet.engine.constrained import JSON_OPTIONS, Grammar, GrammarError
from neuro_bitnet.server.errors import APIError

NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
_TOOLS_PROMPT = (
    'To call a function, reply with only {{"name": NAME, "arguments": {{...}}}}; else reply in text. '
    "Functions:\n{tools}"
)


@dataclass
class ToolPlan:
    """The tools a request offers and how the reply may use them."""

    functions: dict[str, dict[str, Any]]  # name -> {"description", "parameters"}
    choice: str  # "auto", "required" or the name of the one function allowed
    ids: list[str] = field(default_factory=list)

    def call_schema(self) -> dict[str, Any]:
        """JSON schema of one call of any allowed function."""
        names = list(self.functions) if self.choice in ("auto", "required") else [self.choice]
        options = [{
            "type": "object",
            "properties": {"name": {"const": name}, "arguments": self.functions[name]["parameters"]},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        } for name in names]
        return options[0] if len(options) == 1 else {"anyOf": options}

    def grammar(self) -> Grammar:
        call = {**self.call_schema(), "x-guidance": JSON_OPTIONS}
        if self.choice == "auto":
            text = "start: call | TEXT\ncall: %json " + json.dumps(call) + "\nTEXT: /[^{](.|\\n)*/\n"
            return compile_grammar(lambda: Grammar.lark(text), "tools")
        return compile_grammar(lambda: Grammar.json_schema(call), "tools")

    def parse(self, text: str, finish_reason: str) -> tuple[str | None, list[dict[str, Any]] | None, str]:
        """(content, tool_calls, finish_reason) of a finished reply: the same deltas as a stream,
        accumulated."""
        stream = ToolStream(self)
        deltas = stream.push(text)
        last, finish_reason = stream.finish(finish_reason)
        content, call = "", None
        for delta in deltas + last:
            content += delta.get("content", "")
            for part in delta.get("tool_calls", []):
                if call is None:
                    call = {"id": part["id"], "type": part["type"], "function": dict(part["function"])}
                else:
                    call["function"]["arguments"] += part["function"]["arguments"]
        if call is None:
            return content, None, finish_reason
        return (content or None), [call], finish_reason

    def tool_call(self, name: str, arguments: Any, index: int = 0) -> dict[str, Any]:
        while len(self.ids) <= index:
            self.ids.append("call_" + uuid.uuid4().hex[:24])
        return {"id": self.ids[index], "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}

    def system_text(self) -> str:
        tools = [{"name": n, **{k: v for k, v in f.items() if v is not None}} for n, f in self.functions.items()]
        return _TOOLS_PROMPT.format(tools="\n".join(json.dumps(t, ensure_ascii=False, separators=(",", ":"))
                                                    for t in tools))


def structured_output(body: Any) -> tuple[ToolPlan | None, Grammar | None]:
    """The tool plan and the grammar of a chat request (both None for plain text)."""
    plan = tool_plan(body.tools, body.tool_choice)
    grammar = response_grammar(body.response_format)
    if plan is not None and grammar is not None:
        raise APIError(400, "response_format and tools cannot be combined on this server; send one of them",
                       param="response_format")
    return plan, plan.grammar() if plan is not None else grammar


def response_grammar(response_format: Any) -> Grammar | None:
    """The grammar a request's ``response_format`` asks for (None for plain text)."""
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return Grammar.json_object()
    spec = response_format.json_schema
    if spec is None:
        raise APIError(400, "response_format of type 'json_schema' needs a 'json_schema' object",
                       param="response_format", code="invalid_schema")
    schema = spec.schema_ if spec.schema_ is not None else {"type": "object"}
    return compile_grammar(lambda: Grammar.json_schema(schema), "response_format")


def tool_plan(tools: list[Any] | None, tool_choice: Any) -> ToolPlan | None:
    """The request's tools as a plan, or None when the reply is plain text."""
    if not tools:
        if tool_choice not in (None, "none"):
            raise APIError(400, "tool_choice needs 'tools'", param="tool_choice")
        return None
    functions: dict[str, dict[str, Any]] = {}
    for tool in tools:
        fn = tool.function
        if fn.name in functions:
            raise APIError(400, f"two tools are named {fn.name!r}", param="tools", code="invalid_tools")
        parameters = fn.parameters if fn.parameters is not None else NO_PARAMETERS
        if parameters.get("type", "object") != "object":
            raise APIError(400, f"the parameters of tool {fn.name!r} must be a JSON schema of type 'object'",
                           param="tools", code="invalid_tools")
        functions[fn.name] = {"description": fn.description, "parameters": parameters}
    choice = tool_choice if tool_choice is not None else "auto"
    if choice == "none":
        return None
    if not isinstance(choice, str):
        choice = choice.function.name
        if choice not in functions:
            raise APIError(400, f"tool_choice names {choice!r}, which is not among the tools",
                           param="tool_choice", code="invalid_tools")
    plan = ToolPlan(functions, choice)
    for name, fn in functions.items():  # every tool's schema on its own: errors name the tool
        compile_grammar(lambda fn=fn: Grammar.json_schema(fn["parameters"]), "tools", f"tool {name!r}: ")
    plan.grammar()
    return plan


def prompt_messages(messages: list[Any], plan: ToolPlan | None) -> list[dict[str, str]]:
    """Messages as the engine's chat templates take them (system/user/assistant text)."""
    out: list[dict[str, str]] = []
    names: dict[str, str] = {}  # call id -> function name, from the assistant's earlier calls
    for message in messages:
        role = "system" if message.role == "developer" else message.role
        for call in message.tool_calls or []:
            names[call.id] = call.function.name
        if role == "tool":
            name = names.get(message.tool_call_id or "", message.name or "the function")
            text = f"Result of {name} (call {message.tool_call_id}): {message.text()}"
            if out and out[-1].get("_tool"):
                out[-1]["content"] += "\n" + text
            else:
                out.append({"role": "user", "content": text, "_tool": "1"})
            continue
        content = message.text()
        if role == "assistant" and message.tool_calls:
            calls = [json.dumps({"name": c.function.name, "arguments": _arguments(c.function.arguments)},
                                ensure_ascii=False) for c in message.tool_calls]
            content = "\n".join(([content] if content else []) + calls)
        out.append({"role": role, "content": content})
    for m in out:
        m.pop("_tool", None)
    if plan is not None:
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + plan.system_text()}
        else:
            out.insert(0, {"role": "system", "content": plan.system_text()})
    return out


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise APIError(400, "a tool call's 'arguments' is not valid JSON", param="messages",
                       code="invalid_tools") from None


def compile_grammar(build: Any, param: str, prefix: str = "") -> Grammar:
    """``build()``, with a bad schema or grammar turned into a 400 naming ``param``."""
    try:
        return build()
    except GrammarError as exc:
        raise APIError(400, f"{prefix}{exc}", param=param, code="invalid_schema") from None


_CALL_HEAD = re.compile(r'\{"name": "([A-Za-z0-9_-]+)", "arguments": ')


class ToolStream:
    """Turns the streamed text of a reply into OpenAI ``delta`` objects: text as ``content``; a
    call as ``tool_calls`` (the function's name first, then its arguments piece by piece, as the
    ``openai`` client accumulates them by index)."""

    def __init__(self, plan: ToolPlan) -> None:
        self.plan = plan
        self.buffer = ""
        self.mode: str | None = None  # None until the first character: "text" or "call"
        self.sent = 0  # characters of the buffer already sent
        self.name: str | None = None

    def push(self, text: str) -> list[dict[str, Any]]:
        self.buffer += text
        if self.mode is None and self.buffer:
            self.mode = "call" if self.buffer.startswith("{") else "text"
        if self.mode == "text":
            return self._content()
        if self.mode == "call":
            if self.name is None:
                match = _CALL_HEAD.match(self.buffer)
                if match is None:
                    return []
                self.name, self.sent = match.group(1), match.end()
                call = self.plan.tool_call(self.name, {})
                call["function"]["arguments"] = ""
                return [{"tool_calls": [{"index": 0, **call}]}] + self._arguments(hold=1)
            return self._arguments(hold=1)
        return []

    def finish(self, finish_reason: str) -> tuple[list[dict[str, Any]], str]:
        """The last deltas and the reply's finish_reason."""
        if self.mode == "call" and self.name is not None:
            if finish_reason == "length":  # cut off mid-call: what there is, as OpenAI does
                return self._arguments(hold=0), "length"
            return self._arguments(hold=1), "tool_calls"
        return self._content(), finish_reason

    def _content(self) -> list[dict[str, Any]]:
        piece, self.sent = self.buffer[self.sent:], len(self.buffer)
        return [{"content": piece}] if piece else []

    def _arguments(self, hold: int) -> list[dict[str, Any]]:
        end = len(self.buffer) - hold  # the call's closing brace comes last: never sent
        piece = self.buffer[self.sent:end]
        if not piece:
            return []
        self.sent = end
        return [{"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}]
