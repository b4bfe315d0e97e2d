"""A file's jinja chat template, rendered safely (used by :mod:`chat_format` for files that have one).

Templates run in jinja2's immutable sandbox with the helpers Hugging Face provides
(``raise_exception``, ``strftime_now``), so a template from a downloaded file cannot reach Python
internals; rendering is bounded in time and output size, and can be stopped, so a hostile
template cannot wedge the model thread. jinja2 is imported only here, when a template is used.
"""

from __future__ import annotations

import ctypes
import threading
import time
from datetime import datetime
from functools import lru_cache
from typing import Any, Callable

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from neuro_bitnet.engine.chat_format import MAX_POWER_EXPONENT, MIN_OUTPUT_CHARS, ChatFormatError


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _TooBig(jinja2.exceptions.SecurityError):
    """A template operation would build a value past the output bound."""


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox plus size checks on the operations that can allocate without bound
    in one step (``'x' * N``, ``a + b``, ``N ** M``, ``str.ljust(N)`` and the like)."""

    intercepted_binops = frozenset(["*", "+", "**"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        limit = _limit()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > limit:
                    raise _TooBig(f"'*' would build {len(seq) * n:,} items")
        elif operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                if len(left) + len(right) > limit:
                    raise _TooBig(f"'+' would build {len(left) + len(right):,} items")
        elif operator == "**" and isinstance(right, int) and abs(right) > MAX_POWER_EXPONENT:
            raise _TooBig(f"exponent {right} is too large")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        # Width and count arguments (ljust, center, zfill, expandtabs, ...) build strings in one
        # C call that the time bound cannot interrupt.
        limit = _limit()
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool) and value > limit:
                raise _TooBig(f"argument {value:,} is too large")
        return super().call(__context, __obj, *args, **kwargs)


_render_state = threading.local()  # .limit: the output bound of the render on this thread


def _limit() -> int:
    return getattr(_render_state, "limit", MIN_OUTPUT_CHARS)


def _bounded_filter(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """A width-taking filter (center, indent, ...) that refuses widths past the output bound."""

    def bounded(*args: Any, **kwargs: Any) -> Any:
        for value in (*args[1:], *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool) and value > _limit():
                raise _TooBig(f"{name} width {value:,} is too large")
        return original(*args, **kwargs)

    return bounded


@lru_cache(maxsize=16)
def compile_template(template: str) -> jinja2.Template:
    """The compiled template (ChatFormatError for a syntax error); kept for the next call."""
    env = _BoundedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    for name in ("center", "indent", "wordwrap", "truncate"):
        env.filters[name] = _bounded_filter(name, env.filters[name])
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatFormatError(f"invalid chat template (line {exc.lineno}): {exc.message}") from None


class _Stopped(BaseException):
    """Raised inside a template's rendering thread to end it (time bound or cancellation)."""


def _interrupt(thread: threading.Thread) -> None:
    """Raise _Stopped in ``thread`` at its next Python instruction (a long C call finishes first)."""
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(_Stopped))


def render_template(compiled: jinja2.Template, variables: dict[str, Any], limit: int,
                     timeout: float, cancelled: Callable[[], bool] | None) -> str:
    """Render on a helper thread, which is stopped past ``timeout`` seconds, past ``limit``
    characters of output or when ``cancelled()`` turns true; the caller is never held longer."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            _render_state.limit = limit
            size, parts = 0, []
            for part in compiled.generate(**variables):
                size += len(part)
                if size > limit:
                    raise _TooBig(f"the prompt would be longer than {limit:,} characters")
                parts.append(part)
            box["text"] = "".join(parts)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=work, name="chat-template", daemon=True)
    end = time.monotonic() + timeout
    thread.start()
    while not done.wait(0.02):
        stop = cancelled is not None and cancelled()
        if stop or time.monotonic() > end:
            _interrupt(thread)
            reason = "was cancelled" if stop else f"took longer than {timeout:g} s"
            raise ChatFormatError(f"rendering the chat template {reason}; stopped")
    error = box.get("error")
    if error is None and "text" in box:
        return box["text"]
    if error is None or isinstance(error, _Stopped):
        raise ChatFormatError("rendering the chat template was stopped")
    if isinstance(error, _TooBig):
        raise ChatFormatError(f"chat template refused: {error}") from None
    if isinstance(error, jinja2.exceptions.SecurityError):
        raise ChatFormatError(f"chat template tried an unsafe operation: {error}") from None
    if isinstance(error, jinja2.TemplateError):
        raise ChatFormatError(f"chat template error: {error}") from None
    if isinstance(error, Exception):  # a template can fail in arbitrary ways (bad index, type error)
        raise ChatFormatError(f"chat template failed: {type(error).__name__}: {error}") from None
    raise error
