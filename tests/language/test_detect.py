"""Language detection on short questions, restricted to the languages we translate."""

import pytest

from neuro_bitnet.language import detect_language, language_name
from neuro_bitnet.language.translate import clean_translation, translation_messages

QUESTIONS = [
    ("¿Cuál es la capital de Francia?", "es"),
    ("¿Quién escribió Don Quijote?", "es"),
    ("¿Cuántos planetas hay en el sistema solar?", "es"),
    ("What is the capital of France?", "en"),
    ("How many legs does a spider have?", "en"),
    ("Qui a écrit Les Misérables ?", "fr"),
    ("Wie hoch ist der Mount Everest?", "de"),
    ("Qual é a capital do Brasil?", "pt"),
    ("Chi ha dipinto la Gioconda?", "it"),
]


@pytest.mark.parametrize("text,expected", QUESTIONS)
def test_detects_short_questions(text, expected):
    assert detect_language(text).language == expected


def test_empty_and_uncertain_texts_count_as_english():
    assert detect_language("   ").language == "en"
    assert detect_language("hola").confidence < 0.9  # too short to be sure either way


def test_language_names():
    assert language_name("es") == "Spanish"
    assert language_name("xx") == "xx"


def test_translation_prompt_and_cleanup():
    msgs = translation_messages("¿Qué hora es?", "es", "en")
    assert msgs[0]["role"] == "system" and "Spanish" in msgs[1]["content"] and "English" in msgs[1]["content"]
    assert clean_translation('Translation: "What time is it?"\nNote: informal') == "What time is it?"
    assert clean_translation("  What time is it?  ") == "What time is it?"
