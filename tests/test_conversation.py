"""Conversation history fitting into the context."""

from neuro_bitnet.conversation import Conversation, approximate_counter


def words(messages):
    return sum(len(m["content"].split()) for m in messages)


def test_fit_drops_oldest_exchanges_first():
    conv = Conversation(system="be brief")
    for i in range(5):
        conv.add_exchange(f"question {i} " + "x " * 10, f"answer {i} " + "y " * 10)
    dropped = conv.fit("new question", budget=60, count=words)
    assert dropped == 3
    assert conv.turns[0]["content"].startswith("question 3")
    assert words(conv.messages("new question")) <= 60
    assert conv.messages("new question")[0] == {"role": "system", "content": "be brief"}
    assert conv.messages("new question")[-1] == {"role": "user", "content": "new question"}


def test_fit_keeps_system_and_question_even_when_too_long():
    conv = Conversation(system="s")
    conv.add_exchange("a", "b")
    assert conv.fit("q " * 100, budget=10, count=words) == 1
    assert conv.turns == []


def test_reset_and_approximate_counter():
    conv = Conversation(system="sys")
    conv.add_exchange("u", "a")
    conv.reset()
    assert conv.messages() == [{"role": "system", "content": "sys"}]
    count = approximate_counter(lambda text: len(text))
    assert count([{"role": "user", "content": "abcd"}]) == 4 + 8
