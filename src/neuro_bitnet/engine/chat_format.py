"""Chat messages -> prompt text: the GGUF's jinja ``tokenizer.chat_template`` or the BitNet format.

Templates run in jinja2's immutable sandbox with the helpers Hugging Face provides
(``raise_exception``, ``strftime_now``), so a template from a downloaded file cannot reach Python
internals.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from neuro_bitnet.errors import NeuroError

__all__ = ["ChatFormatError", "render_chat", "BITNET_EOT", "ROLES"]

ROLES = ("system", "user", "assistant")
BITNET_EOT = "<|eot_id|>"


class ChatFormatError(NeuroError, ValueError):
    """The messages or the chat template cannot be turned into a prompt."""

    exit_code = 2


def _message_text(content: Any, index: int) -> str:
    """Content as text: a string, None (empty) or a list of OpenAI-style text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(
                part.get("text"), str
            ):
                parts.append(part["text"])
            else:
                raise ChatFormatError(f"message {index}: only text content parts are supported")
        return "".join(parts)
    raise ChatFormatError(f"message {index}: content must be a string, got {type(content).__name__}")


def _validate(messages: list[dict]) -> list[dict[str, str]]:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ChatFormatError("a chat needs at least one message")
    clean = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ChatFormatError(f"message {i} must be an object with 'role' and 'content'")
        role = message.get("role")
        if role not in ROLES:
            raise ChatFormatError(
                f"message {i} has role {role!r}; expected one of: {', '.join(ROLES)}"
            )
        clean.append({**message, "role": role, "content": _message_text(message.get("content"), i)})
    return clean


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatFormatError(f"invalid chat template (line {exc.lineno}): {exc.message}") from None


def _render_bitnet(messages: list[dict[str, str]], bos_token: str, add_generation_prompt: bool) -> str:
    """The BitNet b1.58 2B-4T format: ``Role: content<|eot_id|>`` turns after BOS."""
    turns = [f"{m['role'].capitalize()}: {m['content'].strip()}{BITNET_EOT}" for m in messages]
    prompt = bos_token + "".join(turns)
    if add_generation_prompt:
        prompt += "Assistant: "
    return prompt


def render_chat(
    messages: list[dict],
    *,
    template: str | None,
    bos_token: str,
    eos_token: str,
    add_generation_prompt: bool = True,
) -> str:
    """Prompt text for ``messages`` (dicts with ``role`` system/user/assistant and ``content``).

    Uses the jinja ``template`` when given (the GGUF's ``tokenizer.chat_template``), otherwise the
    BitNet format. Raises ChatFormatError for bad messages or a failing template.
    """
    clean = _validate(messages)
    if not template:
        return _render_bitnet(clean, bos_token, add_generation_prompt)
    compiled = _compile(template)
    try:
        return compiled.render(
            messages=clean,
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
        )
    except jinja2.exceptions.SecurityError as exc:
        raise ChatFormatError(f"chat template tried an unsafe operation: {exc}") from None
    except jinja2.TemplateError as exc:
        raise ChatFormatError(f"chat template error: {exc}") from None
    except Exception as exc:  # a template can fail in arbitrary ways (bad index, type error)
        raise ChatFormatError(f"chat template failed: {type(exc).__name__}: {exc}") from None
