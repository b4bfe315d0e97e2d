"""Chat prompt rendering: built-in BitNet format and jinja chat templates."""

from __future__ import annotations

import threading
import time

import pytest

from neuro_bitnet.engine.chat_format import (
    MICROSOFT_PLACEHOLDER_TEMPLATE,
    PLACEHOLDER_MARKER,
    ChatFormatError,
    chat_format,
    render_chat,
)
from neuro_bitnet.errors import NeuroError

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"

# chat_template of microsoft/bitnet-b1.58-2B-4T (tokenizer_config.json).
BITNET_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = message['role'] | capitalize + ': '+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)

# The same template as quoted elsewhere without the BOS line (the caller's encode adds BOS).
BITNET_TEMPLATE_NO_BOS = BITNET_TEMPLATE.replace(
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}", ""
)

# chat_template of Meta-Llama-3-8B-Instruct.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

CHATS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "¿Cuál es la capital de España?"},
    ],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! "},
        {"role": "user", "content": "  Tell me a joke 🦙\n"},
    ],
]


def test_builtin_bitnet_format():
    chat = CHATS[2]
    assert render_chat(chat, template=None, bos_token=BOS, eos_token=EOS) == (
        "<|begin_of_text|>System: Be brief.<|eot_id|>User: Hi<|eot_id|>"
        "Assistant: Hello!<|eot_id|>User: Tell me a joke 🦙<|eot_id|>Assistant: "
    )
    no_system = render_chat(CHATS[0], template=None, bos_token=BOS, eos_token=EOS,
                            add_generation_prompt=False)
    assert no_system == "<|begin_of_text|>User: What is 2+2?<|eot_id|>"


@pytest.mark.parametrize("chat", CHATS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_official_bitnet_template_equals_builtin(chat, add_generation_prompt):
    from_template = render_chat(chat, template=BITNET_TEMPLATE, bos_token=BOS, eos_token=EOS,
                                add_generation_prompt=add_generation_prompt)
    builtin = render_chat(chat, template=None, bos_token=BOS, eos_token=EOS,
                          add_generation_prompt=add_generation_prompt)
    assert from_template == builtin


def test_llama3_template():
    text = render_chat(CHATS[1], template=LLAMA3_TEMPLATE, bos_token=BOS, eos_token=EOS)
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "You are a helpful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n¿Cuál es la capital de España?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


@pytest.mark.parametrize("chat", CHATS)
def test_bitnet_template_without_bos_equals_builtin_after_bos(chat):
    from_template = render_chat(chat, template=BITNET_TEMPLATE_NO_BOS, bos_token=BOS, eos_token=EOS)
    assert BOS + from_template == render_chat(chat, template=None, bos_token=BOS, eos_token=EOS)


@pytest.mark.parametrize("template", [BITNET_TEMPLATE, BITNET_TEMPLATE_NO_BOS, LLAMA3_TEMPLATE])
@pytest.mark.parametrize("chat", CHATS)
def test_templates_match_transformers(template, chat):
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models

    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.BPE()), bos_token=BOS, eos_token=EOS
    )
    expected = hf.apply_chat_template(chat, chat_template=template, tokenize=False,
                                      add_generation_prompt=True)
    assert render_chat(chat, template=template, bos_token=BOS, eos_token=EOS) == expected


def test_template_helpers():
    raising = "{% if messages|length > 1 %}{{ raise_exception('only one message') }}{% endif %}ok"
    assert render_chat(CHATS[0], template=raising, bos_token=BOS, eos_token=EOS) == "ok"
    with pytest.raises(ChatFormatError, match="only one message"):
        render_chat(CHATS[1], template=raising, bos_token=BOS, eos_token=EOS)
    dated = "{{ strftime_now('%Y') }}"
    year = render_chat(CHATS[0], template=dated, bos_token=BOS, eos_token=EOS)
    assert year.isdigit() and len(year) == 4


@pytest.mark.parametrize(
    "template, message",
    [
        ("{{ ''.__class__.__mro__ }}", "unsafe"),
        ("{% for x in %}", "invalid chat template"),
        ("{{ messages[5]['content'] | trim }}", "chat template"),
        ("{{ messages.append(1) }}", "unsafe"),
    ],
)
def test_bad_or_hostile_templates(template, message):
    with pytest.raises(ChatFormatError, match=message):
        render_chat(CHATS[0], template=template, bos_token=BOS, eos_token=EOS)


def test_private_attributes_render_as_undefined():
    probe = "[{% for m in messages %}{{ m.content.__globals__ }}{{ m.__class__ }}{% endfor %}]"
    assert render_chat(CHATS[0], template=probe, bos_token=BOS, eos_token=EOS) == "[]"


@pytest.mark.parametrize(
    "messages, message",
    [
        ([], "at least one message"),
        ([{"role": "tool", "content": "x"}], "role 'tool'"),
        ([{"content": "x"}], "role None"),
        (["hello"], "must be an object"),
        ([{"role": "user", "content": 5}], "content must be a string"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "text content"),
    ],
)
def test_invalid_messages(messages, message):
    with pytest.raises(ChatFormatError, match=message) as info:
        render_chat(messages, template=None, bos_token=BOS, eos_token=EOS)
    assert isinstance(info.value, NeuroError) and "\n" not in str(info.value)


def test_content_parts_and_none():
    chat = [
        {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": None},
    ]
    assert render_chat(chat, template=None, bos_token="", eos_token=EOS) == (
        "User: Hi there<|eot_id|>Assistant: <|eot_id|>Assistant: "
    )


# -- the one rule: Microsoft's placeholder template means the trained BitNet format ------------
def test_the_placeholder_template_renders_the_trained_format():
    """The official 2B file's template, rendered as written, would drop the system prompt and end
    the prompt with EOS; the rule replaces it by the format the model was trained on."""
    assert len(MICROSOFT_PLACEHOLDER_TEMPLATE) == 282 and PLACEHOLDER_MARKER in MICROSOFT_PLACEHOLDER_TEMPLATE
    for chat in CHATS:
        rendered = render_chat(chat, template=MICROSOFT_PLACEHOLDER_TEMPLATE, bos_token=BOS, eos_token=EOS)
        assert rendered == render_chat(chat, template=None, bos_token=BOS, eos_token=EOS)
        assert EOS not in rendered and rendered.endswith("<|eot_id|>Assistant: ")
    assert render_chat(CHATS[2], template=MICROSOFT_PLACEHOLDER_TEMPLATE, bos_token=BOS, eos_token=EOS) == (
        "<|begin_of_text|>System: Be brief.<|eot_id|>User: Hi<|eot_id|>"
        "Assistant: Hello!<|eot_id|>User: Tell me a joke 🦙<|eot_id|>Assistant: "
    )


def test_chat_format_decision():
    assert chat_format(None).name == chat_format("").name == "bitnet"
    assert chat_format(MICROSOFT_PLACEHOLDER_TEMPLATE).template is None
    assert "placeholder" in chat_format(MICROSOFT_PLACEHOLDER_TEMPLATE).description
    assert chat_format(LLAMA3_TEMPLATE) == chat_format(LLAMA3_TEMPLATE)
    assert chat_format(LLAMA3_TEMPLATE).template == LLAMA3_TEMPLATE  # other templates are honoured
    with pytest.raises(ChatFormatError, match="must be a string, not int"):
        chat_format(7)


# -- hostile templates fail quickly and leave nothing running -----------------------------------
HOSTILE_SLOW = [
    "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
    "{% for m in messages %}{% for a in m.content * 9999 %}{% for b in m.content * 9999 %}"
    "{% endfor %}{% endfor %}{% endfor %}",
]
HOSTILE_BIG = [
    ("{{ 'x' * 3000000000 }}", "would build 3,000,000,000 items"),
    ("{% for x in [1] * 3000000000 %}{% endfor %}", "would build"),
    ("{{ 10 ** 100000000 }}", "exponent"),
    ("{{ 'x'.ljust(3000000000) }}", "argument 3,000,000,000 is too large"),
    ("{{ 'x' | center(3000000000) }}", "center width"),
    ("{% for i in range(99999) %}{{ 'y' * 99 }}{% endfor %}", "the prompt would be longer than"),
]


def _template_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "chat-template"]


def _wait_no_template_threads() -> None:
    deadline = time.monotonic() + 60
    while _template_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _template_threads()


@pytest.mark.parametrize("template", HOSTILE_SLOW)
def test_slow_templates_are_stopped_at_the_time_bound(template):
    with pytest.raises(ChatFormatError, match="took longer than 0.5 s; stopped"):
        render_chat(CHATS[0], template=template, bos_token=BOS, eos_token=EOS, timeout=0.5)
    _wait_no_template_threads()  # the rendering thread itself was ended, not left spinning


@pytest.mark.parametrize("template, message", HOSTILE_BIG)
def test_huge_values_are_refused_before_they_are_built(template, message):
    with pytest.raises(ChatFormatError, match=message) as info:
        render_chat(CHATS[0], template=template, bos_token=BOS, eos_token=EOS, timeout=60)
    assert "\n" not in str(info.value)


def test_a_cancelled_render_stops_at_once():
    flag = threading.Event()
    threading.Timer(0.3, flag.set).start()
    with pytest.raises(ChatFormatError, match="was cancelled"):
        render_chat(CHATS[0], template=HOSTILE_SLOW[0], bos_token=BOS, eos_token=EOS,
                    timeout=600, cancelled=flag.is_set)
    _wait_no_template_threads()


def test_big_but_honest_prompts_still_render():
    chat = [{"role": "user", "content": "word " * 200_000}]
    text = render_chat(chat, template=LLAMA3_TEMPLATE, bos_token=BOS, eos_token=EOS)
    assert text.count("word") == 200_000


# ------------------------------------------------- prompt ids: history as the model evaluated it
def _prompter():
    from support.greedy import fixture_model

    return fixture_model().chat_prompt


HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "the city of Paris"},  # " the" is one token of the fixture
    {"role": "user", "content": "And of Spain?"},
]


def test_prompts_without_earlier_answers_tokenize_as_one_text():
    prompter = _prompter()
    for chat in (HISTORY[:2], CHATS[0], CHATS[1]):
        text = prompter.text(chat)
        assert prompter.ids(chat) == prompter.tokenizer.encode(text, add_bos=not text.startswith(BOS))


def test_turn_two_starts_with_turn_one_prompt_and_answer():
    prompter = _prompter()
    tok = prompter.tokenizer
    turn_1 = prompter.ids(HISTORY[:2])
    turn_2 = prompter.ids(HISTORY)
    answer = tok.encode("the city of Paris", add_bos=False)
    assert turn_2[: len(turn_1) + len(answer)] == turn_1 + answer
    assert tok.decode(turn_2) == prompter.text(HISTORY)
    # one text would merge the generation prompt's trailing space into the answer
    whole = tok.encode(prompter.text(HISTORY), add_bos=False)
    assert whole[: len(turn_1)] != turn_1


def test_a_remembered_answer_keeps_its_generated_ids():
    from neuro_bitnet.engine.chat_format import ChatPrompter

    base = _prompter()
    prompter = ChatPrompter(base.tokenizer, None)  # a fresh memory
    tok = prompter.tokenizer
    text = "the city of Paris"
    generated = [tok.encode(c, add_bos=False)[0] for c in text]  # not how the text tokenizes
    assert tok.decode(generated) == text and generated != tok.encode(text, add_bos=False)
    turn_1 = prompter.ids(HISTORY[:2])
    prompter.remember(generated)
    assert prompter.ids(HISTORY)[: len(turn_1) + len(generated)] == turn_1 + generated
    other = [*HISTORY[:2], {"role": "assistant", "content": "Lyon"}, HISTORY[3]]
    assert prompter.ids(other) == ChatPrompter(tok, None).ids(other)  # other text: not affected


def test_answers_that_do_not_come_back_unchanged_are_not_remembered_and_memory_is_bounded():
    from neuro_bitnet.engine import chat_format as cf

    prompter = cf.ChatPrompter(_prompter().tokenizer, None)
    tok = prompter.tokenizer
    prompter.remember(tok.encode(" Paris", add_bos=False))  # the format strips the space
    prompter.remember([])
    assert not prompter._answers
    for i in range(cf.ANSWER_MEMORY + 5):
        prompter.remember(tok.encode(f"answer {i}", add_bos=False))
    assert len(prompter._answers) == cf.ANSWER_MEMORY
    assert "answer 0" not in prompter._answers and f"answer {cf.ANSWER_MEMORY + 4}" in prompter._answers


def test_a_file_template_tokenizes_the_whole_text():
    from neuro_bitnet.engine.chat_format import ChatPrompter

    tok = _prompter().tokenizer
    prompter = ChatPrompter(tok, LLAMA3_TEMPLATE)
    prompter.remember(tok.encode("Paris", add_bos=False))
    text = prompter.text(HISTORY)
    assert prompter.ids(HISTORY) == tok.encode(text, add_bos=not text.startswith(BOS))
