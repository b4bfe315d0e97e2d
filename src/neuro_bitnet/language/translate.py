"""Translation done by the language model itself, with a short greedy prompt."""

from __future__ import annotations

from neuro_bitnet.backends.base import Backend, GenerationOptions
from neuro_bitnet.language.detect import language_name

_SYSTEM = "You are a precise translator. Reply with the translation only, without notes or quotes."


def translation_messages(text: str, source: str, target: str) -> list[dict[str, str]]:
    """The chat messages that ask the model for a translation."""
    request = (
        f"Translate this {language_name(source)} text into {language_name(target)}:\n\n{text.strip()}"
    )
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": request}]


def clean_translation(raw: str) -> str:
    """Strip what small models add around a translation: labels, quotes, trailing lines."""
    text = raw.strip()
    for label in ("Translation:", "English:", "Answer:"):
        if text.lower().startswith(label.lower()):
            text = text[len(label) :].strip()
    lines = [line for line in text.splitlines() if line.strip()]
    text = lines[0].strip() if lines else ""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'«“":
        text = text[1:-1].strip()
    return text.strip("“”«»").strip()


def translate_with_backend(backend: Backend, text: str, source: str, target: str = "en") -> str:
    """Translate ``text`` from ``source`` to ``target`` with greedy decoding on ``backend``.

    Returns the input unchanged when the model produces nothing usable.
    """
    if source == target or not text.strip():
        return text
    budget = max(32, 3 * len(text.split()) + 24)
    options = GenerationOptions(max_tokens=budget, temperature=0.0, repeat_penalty=1.0)
    raw = "".join(backend.chat(translation_messages(text, source, target), options))
    return clean_translation(raw) or text
