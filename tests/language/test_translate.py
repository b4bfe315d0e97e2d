"""The translation policy: whole texts, block by block, with only the model's labels removed."""

from __future__ import annotations

import re

import pytest

from neuro_bitnet.answering import prepare_turn
from neuro_bitnet.errors import ConfigError
from neuro_bitnet.language.translate import (
    MAX_BLOCK_WORDS,
    check_language,
    clean_translation,
    split_blocks,
    to_english,
    translate_with_backend,
)


class EchoTranslator:
    """A backend that "translates" by upper-casing the requested block, wrapped the way small
    models wrap answers: a label line first, the block's lines, and a trailing note."""

    name = "echo"
    model_name = "echo"
    ctx_size = 4096

    def __init__(self, wrap: bool = True) -> None:
        self.wrap = wrap
        self.requests: list[str] = []

    def chat(self, messages, options):
        block = messages[-1]["content"].split("\n\n", 1)[1]
        self.requests.append(block)
        answer = block.upper()
        if self.wrap:
            answer = f"Here is the translation:\n{answer}\n\nNote: this is a literal translation."
        yield from re.findall(r".{1,5}", answer, flags=re.S)  # streamed in small pieces

    def count_tokens(self, text: str) -> int:
        return len(text.split())


DOCUMENT = """El perro corre por el parque.
Luego vuelve a casa.

Segundo párrafo: el gato duerme.

- primero
- segundo

```
print("hola")
```

Último párrafo."""


def test_a_multi_paragraph_text_is_translated_completely_with_its_layout():
    backend = EchoTranslator()
    out = translate_with_backend(backend, DOCUMENT, "es", "en")
    assert out == DOCUMENT.upper().replace('PRINT("HOLA")', 'print("hola")')
    # one request per paragraph; the code block is never sent to the model
    assert len(backend.requests) == 4
    assert all("print(" not in r for r in backend.requests)


def test_labels_quotes_and_notes_are_stripped_but_every_line_is_kept():
    assert clean_translation('Translation: "What time is it?"\nNote: informal') == "What time is it?"
    assert clean_translation("  What time is it?  ") == "What time is it?"
    assert clean_translation("English translation:\nLine one.\nLine two.\n\nLine three.") == (
        "Line one.\nLine two.\n\nLine three.")
    assert clean_translation("Spanish: Hola.\nAdiós.") == "Hola.\nAdiós."
    assert clean_translation("«Bonjour»") == "Bonjour"
    assert clean_translation('"one" and "two"') == '"one" and "two"'  # not one quoted whole


def test_a_long_paragraph_is_cut_into_blocks_that_keep_every_word():
    sentence = "Esta es una frase bastante larga con muchas palabras para probar el corte. "
    paragraph = (sentence * 40).strip()
    blocks = split_blocks(paragraph)
    assert len(blocks) > 1 and all(len(b.split()) <= MAX_BLOCK_WORDS for b in blocks)
    assert " ".join(blocks).split() == paragraph.split()
    out = translate_with_backend(EchoTranslator(), paragraph, "es", "en")
    assert out.split() == paragraph.upper().split()


def test_a_block_the_model_leaves_empty_is_kept_in_the_original():
    class Silent(EchoTranslator):
        def chat(self, messages, options):
            yield "Translation:"

    assert translate_with_backend(Silent(), DOCUMENT, "es", "en") == DOCUMENT


def test_to_english_and_prepare_turn_use_the_policy():
    backend = EchoTranslator(wrap=False)
    spanish = "¿Cuál es la capital de Francia?\n\nResponde en una frase, por favor."
    result = to_english(backend, spanish)
    assert result.translated and result.detection.language == "es"
    assert result.text == spanish.upper()
    turn = prepare_turn(backend, spanish, translate=True, reply_in="auto")
    assert turn.text == spanish.upper() and "Always reply in Spanish" in turn.system_suffix
    english = prepare_turn(backend, "What is the capital of France?", translate=True, reply_in="auto")
    assert english.text == "What is the capital of France?" and english.system_suffix == ""
    assert prepare_turn(backend, spanish, translate=True, reply_in="fr").system_suffix.endswith("French.")
    assert prepare_turn(backend, "Hi", translate=False, reply_in="de").system_suffix.endswith("German.")


def test_only_supported_language_codes_are_accepted():
    assert check_language(" ES ") == "es"
    with pytest.raises(ConfigError, match="klingon.*en \\(English\\)"):
        check_language("klingon")
    with pytest.raises(ConfigError):
        prepare_turn(EchoTranslator(), "Hi", translate=True, reply_in="tlh")


def test_check_runs_before_each_block_and_can_stop_the_translation():
    backend = EchoTranslator()
    calls = []

    def check():
        calls.append(len(backend.requests))
        if len(calls) == 3:
            raise RuntimeError("client gone")

    with pytest.raises(RuntimeError, match="client gone"):
        translate_with_backend(backend, DOCUMENT, "es", "en", check=check)
    assert calls == [0, 1, 2] and len(backend.requests) == 2
