"""Pick the search language from the question."""

from __future__ import annotations

import re

from neuro_bitnet.language.detect import detect_language

_STOPWORDS = {
    "en": "a an the of in on at to for and or is are was were be been what who whom which when where why how "
          "do does did can could would should will tell me about please explain describe give list",
    "es": "el la los las un una unos unas de del al en y o que qué quien quién cual cuál cuando cuándo donde "
          "dónde por porque cómo como es son fue era ser para con se me sobre explica dime háblame",
    "fr": "le la les un une des de du en et ou que qui quoi quel quelle quand où pourquoi comment est sont "
          "était être pour avec sur moi dis explique",
    "de": "der die das ein eine einen des dem den und oder was wer wie wann wo warum ist sind war sein für "
          "mit über mir erkläre",
    "it": "il lo la i gli le un una di del della in e o che chi cosa quale quando dove perché come è sono era "
          "per con su mi spiega",
    "pt": "o a os as um uma de do da em e ou que quem qual quando onde por porque como é são foi ser para "
          "com sobre me explique",
}
STOPWORDS = {lang: set(words.split()) for lang, words in _STOPWORDS.items()}


def question_language(question: str) -> str:
    """Two-letter language code of the question ("en" when unsure)."""
    return detect_language(question).language


def keywords(question: str, language: str) -> str:
    """The question without its question words and stopwords (the whole question if nothing is left)."""
    stop = STOPWORDS.get(language, set()) | STOPWORDS["en"]
    words = [w for w in re.findall(r"[\w'-]+", question) if w.lower() not in stop]
    return " ".join(words) or question.strip()
