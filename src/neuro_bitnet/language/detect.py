"""Language identification with py3langid, restricted to the languages we translate."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

SUPPORTED_LANGUAGES: dict[str, str] = {
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "de": "German",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "ca": "Catalan",
}
# Below this confidence a short text is treated as English (e.g. a lone name or a code snippet).
MIN_CONFIDENCE = 0.6


@dataclass(frozen=True)
class Detection:
    """The detected language code, its confidence in [0, 1], and whether to trust it."""

    language: str
    confidence: float

    @property
    def is_english(self) -> bool:
        return self.language == "en"


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ident.set_languages(list(SUPPORTED_LANGUAGES))
    return ident


def detect_language(text: str) -> Detection:
    """Detect the language of ``text``; uncertain or empty texts count as English."""
    if not text.strip():
        return Detection("en", 0.0)
    language, confidence = _identifier().classify(text)
    if confidence < MIN_CONFIDENCE:
        return Detection("en", float(confidence))
    return Detection(str(language), float(confidence))


def language_name(code: str) -> str:
    """English name of a language code ("es" -> "Spanish"); the code itself if unknown."""
    return SUPPORTED_LANGUAGES.get(code, code)
