"""Chat messages -> prompt: the one rule for how a model file's chats are rendered.

:func:`chat_format` decides, from a file's ``tokenizer.chat_template``, whether chats use that
jinja template or the built-in BitNet format (no template, or Microsoft's placeholder marked
``BITNET``); :class:`ChatPrompter` applies the decision for one model (text, token ids with one
BOS). Every answer path (engine, daemon, CLI, MCP, the llama-cli backend) goes through them.

Templates run in jinja2's immutable sandbox, bounded in time and output size and stoppable (see
:func:`render_chat` and :mod:`chat_template`, imported only when a file's template is used).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from neuro_bitnet.errors import NeuroError

if TYPE_CHECKING:
    from neuro_bitnet.engine.tokenizer import Tokenizer

__all__ = [
    "BITNET_EOT",
    "ChatFormat",
    "ChatFormatError",
    "ChatPrompter",
    "MICROSOFT_PLACEHOLDER_TEMPLATE",
    "PLACEHOLDER_MARKER",
    "ROLES",
    "chat_format",
    "render_chat",
]

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


# Microsoft's converter writes this into the official 2B-4T GGUF. Their runtime only looks for the
# marker and renders the trained format instead; rendered as written it drops the system prompt,
# ends the prompt with EOS and never shows the model its `Role: text<|eot_id|>` turns.
PLACEHOLDER_MARKER = "BITNET"
MICROSOFT_PLACEHOLDER_TEMPLATE = (
    "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ 'Human: ' + message['content'] + '\\n\\nBITNETAssistant: ' + eos_token }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)

# Bounds on rendering a file's template (a real one takes milliseconds and writes about its input).
RENDER_SECONDS = 5.0
MIN_OUTPUT_CHARS = 1 << 20  # plus 4x the messages' text
MAX_POWER_EXPONENT = 4096


@dataclass(frozen=True)
class ChatFormat:
    """How a model file's chats become prompts."""

    template: str | None  # the jinja template rendered, or None for the built-in BitNet format
    description: str  # one line for people (``neuro model info``)

    @property
    def name(self) -> str:
        return "bitnet" if self.template is None else "template"


def chat_format(template: str | None) -> ChatFormat:
    """The chat format for a file whose ``tokenizer.chat_template`` is ``template``: the file's
    template, except none or Microsoft's placeholder (it holds ``BITNET``), which mean the
    trained BitNet format ``<|begin_of_text|>System: ...<|eot_id|>User: ...<|eot_id|>Assistant: ``."""
    if template is not None and not isinstance(template, str):
        raise ChatFormatError(f"tokenizer.chat_template must be a string, not {type(template).__name__}")
    if not template:
        return ChatFormat(None, "BitNet (built in; the file has no chat template)")
    if PLACEHOLDER_MARKER in template:
        return ChatFormat(None, "BitNet (built in; the file's template is Microsoft's placeholder)")
    return ChatFormat(template, "the file's chat template (tokenizer.chat_template)")


BITNET_ANSWER_PROMPT = "Assistant: "  # the generation prompt: the model writes its answer after it


def _bitnet_segments(messages: list[dict[str, str]], bos_token: str,
                     add_generation_prompt: bool) -> list[tuple[str, bool]]:
    """The BitNet b1.58 2B-4T format as (text, is_answer) pieces: ``Role: content<|eot_id|>`` turns
    after BOS, where the content of an assistant turn (an earlier answer) is a piece of its own."""
    pieces: list[tuple[str, bool]] = [(bos_token, False)]
    for m in messages:
        if m["role"] == "assistant":
            pieces += [(BITNET_ANSWER_PROMPT, False), (m["content"].strip(), True), (BITNET_EOT, False)]
        else:
            pieces.append((f"{m['role'].capitalize()}: {m['content'].strip()}{BITNET_EOT}", False))
    if add_generation_prompt:
        pieces.append((BITNET_ANSWER_PROMPT, False))
    return pieces


def _render_bitnet(messages: list[dict[str, str]], bos_token: str, add_generation_prompt: bool) -> str:
    """The BitNet b1.58 2B-4T format: ``Role: content<|eot_id|>`` turns after BOS."""
    return "".join(text for text, _ in _bitnet_segments(messages, bos_token, add_generation_prompt))


def render_chat(
    messages: list[dict],
    *,
    template: str | None,
    bos_token: str,
    eos_token: str,
    add_generation_prompt: bool = True,
    cancelled: Callable[[], bool] | None = None,
    timeout: float | None = None,
) -> str:
    """Prompt text for ``messages`` (dicts with ``role`` system/user/assistant and ``content``).

    ``template`` is the file's ``tokenizer.chat_template``; :func:`chat_format` decides whether
    it or the BitNet format is used. A template's rendering stops with ChatFormatError after
    ``timeout`` seconds (default RENDER_SECONDS), past 4x the messages' text plus 1 MiB of output, or once
    ``cancelled()`` is true. Raises ChatFormatError for bad messages or a failing template.
    """
    clean = _validate(messages)
    fmt = chat_format(template)
    if fmt.template is None:
        return _render_bitnet(clean, bos_token, add_generation_prompt)
    from neuro_bitnet.engine import chat_template  # jinja2, imported only for a file's template

    compiled = chat_template.compile_template(fmt.template)
    limit = MIN_OUTPUT_CHARS + 4 * sum(len(m["content"]) for m in clean)
    variables = dict(messages=clean, bos_token=bos_token, eos_token=eos_token,
                     add_generation_prompt=add_generation_prompt)
    return chat_template.render_template(compiled, variables, limit,
                                         RENDER_SECONDS if timeout is None else timeout, cancelled)


ANSWER_MEMORY = 64  # generated answers a ChatPrompter keeps the token ids of (most recent first)


class ChatPrompter:
    """Chats -> prompts for one model: its chat format (see :func:`chat_format`), its BOS.

    Token ids of a chat's history equal what the model evaluated when the history was made. In
    the BitNet format the generation prompt ends with ``"Assistant: "`` (its last token is the
    space) and the model writes its answer after that token; tokenizing the rendered history as
    one text would merge the space into the answer's first word (`` Paris``), so every later turn
    would differ from the KV cache from there on and prefill the whole previous answer again. So
    an earlier answer is tokenized as its own piece after the ``"Assistant: "`` piece, and an
    answer this model generated (see :meth:`remember`) keeps the very ids it was generated as:
    the prompt of turn 2 starts with turn 1's prompt ids plus its answer ids. Only turn starts
    differ from the file's training text (one token boundary per earlier answer), and they are
    what the model read at the time. Prompts without earlier answers are tokenized as before.
    """

    def __init__(self, tokenizer: "Tokenizer", template: str | None) -> None:
        self.tokenizer = tokenizer
        self.format = chat_format(template)
        tok = tokenizer
        self.bos_token = tok.decode([tok.bos_id]) if tok.bos_id is not None else ""
        self.eos_token = tok.decode([tok.eos_id]) if tok.eos_id is not None else ""
        # Pieces can be tokenized apart only where that equals tokenizing them together at
        # special tokens (byte-level BPE); SentencePiece would add a space prefix to each piece.
        self._pieces = self.format.template is None and tok.kind == "gpt2"
        self._answers: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._answers_lock = threading.Lock()

    def text(self, messages: list[dict], *, cancelled: Callable[[], bool] | None = None) -> str:
        """The prompt text, BOS text included when the format writes it."""
        return render_chat(messages, template=self.format.template, bos_token=self.bos_token,
                           eos_token=self.eos_token, cancelled=cancelled)

    def ids(self, messages: list[dict], *, cancelled: Callable[[], bool] | None = None) -> list[int]:
        """The prompt's token ids, with BOS once (added only if the format did not write it);
        earlier answers as the model generated them (see the class docstring)."""
        if self._pieces:
            return self._piece_ids(_bitnet_segments(_validate(messages), self.bos_token, True))
        prompt = self.text(messages, cancelled=cancelled)
        has_bos = bool(self.bos_token) and prompt.startswith(self.bos_token)
        return self.tokenizer.encode(prompt, add_bos=not has_bos)

    def _piece_ids(self, segments: list[tuple[str, bool]]) -> list[int]:
        ids: list[int] = []
        run = ""  # text up to the next answer, tokenized as one text
        for text, is_answer in segments:
            if not is_answer:
                run += text
                continue
            ids += self._encode_run(run, first=not ids)
            run = ""
            ids += self._answer_ids(text)
        return ids + self._encode_run(run, first=not ids)

    def _encode_run(self, text: str, *, first: bool) -> list[int]:
        if not first:
            return self.tokenizer.encode(text, add_bos=False)
        has_bos = bool(self.bos_token) and text.startswith(self.bos_token)
        return self.tokenizer.encode(text, add_bos=not has_bos)

    def _answer_ids(self, text: str) -> list[int]:
        with self._answers_lock:
            known = self._answers.get(text)
            if known is not None:
                self._answers.move_to_end(text)
                return list(known)
        return self.tokenizer.encode(text, add_bos=False)

    def remember(self, answer_ids: Sequence[int]) -> None:
        """Keep the ids of an answer this model generated (without its stop token), so that a
        later chat holding that answer's text in its history gets exactly these ids. Only an
        answer whose text comes back unchanged in a prompt is kept (not one that starts or ends
        with white space, which the format strips); the last ANSWER_MEMORY answers are kept."""
        if not self._pieces or not answer_ids:
            return
        text = self.tokenizer.decode(answer_ids)
        if not text or text != text.strip():
            return
        with self._answers_lock:
            self._answers[text] = tuple(int(t) for t in answer_ids)
            self._answers.move_to_end(text)
            while len(self._answers) > ANSWER_MEMORY:
                self._answers.popitem(last=False)

    def text_without_bos(self, messages: list[dict]) -> str:
        """The prompt text without a leading BOS, for programs that add BOS themselves."""
        text = self.text(messages)
        return text[len(self.bos_token):] if self.bos_token and text.startswith(self.bos_token) else text
