"""response_format and tools through the official `openai` client, on the random fixture model.

Only the constrained sampler can make this model write valid JSON, so every output is checked
against its schema with `jsonschema`.
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

openai = pytest.importorskip("openai")

from support.daemon_proc import API_KEY  # noqa: E402

MESSAGES = [{"role": "user", "content": "Describe a user."}]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "age": {"type": "integer", "minimum": 0, "maximum": 99},
        "role": {"enum": ["admin", "user"]},
        "tags": {"type": "array", "items": {"enum": ["x", "y"]}, "maxItems": 2},
    },
    "required": ["name", "age", "role", "tags"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["C", "F"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "description": "Time."}}
TOOLS = [WEATHER, CLOCK]
PARAMETERS = {"get_weather": WEATHER["function"]["parameters"],
              "get_time": {"type": "object", "properties": {}, "additionalProperties": False}}


def _chat(client, **kwargs):
    kwargs.setdefault("model", "default")
    kwargs.setdefault("messages", MESSAGES)
    kwargs.setdefault("max_tokens", 100)
    return client.chat.completions.create(**kwargs)


def _schema_format(schema):
    return {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 1.0, "seed": 11},
                                      {"temperature": 1.0, "seed": 12}])
def test_json_schema_response(openai_client, sampling) -> None:
    reply = _chat(openai_client, response_format=_schema_format(PERSON), **sampling)
    choice = reply.choices[0]
    assert choice.finish_reason == "stop"
    jsonschema.validate(json.loads(choice.message.content), PERSON)


def test_json_schema_response_streamed_equals_whole(openai_client) -> None:
    whole = _chat(openai_client, response_format=_schema_format(PERSON), temperature=0).choices[0].message.content
    stream = _chat(openai_client, response_format=_schema_format(PERSON), temperature=0, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == whole
    jsonschema.validate(json.loads(text), PERSON)


def test_parse_helper_of_the_client(openai_client) -> None:
    """The client's own structured-output helper reads the reply as the schema's JSON."""
    reply = openai_client.chat.completions.parse(model="default", messages=MESSAGES, max_tokens=100,
                                                 temperature=0, response_format=_schema_format(PERSON))
    jsonschema.validate(json.loads(reply.choices[0].message.content), PERSON)


def test_json_object_response(openai_client) -> None:
    for seed in (1, 2, 3):
        reply = _chat(openai_client, response_format={"type": "json_object"}, temperature=1.0, seed=seed,
                      max_tokens=40)
        content = reply.choices[0].message.content
        assert content.startswith("{")
        if reply.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(content), dict)


def _check_call(call, name=None) -> dict:
    assert call.type == "function" and call.id.startswith("call_")
    if name is not None:
        assert call.function.name == name
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, PARAMETERS[call.function.name])
    return arguments


@pytest.mark.parametrize("seed", [None, 3, 4])
def test_required_tool_call(openai_client, seed) -> None:
    sampling = {"temperature": 0} if seed is None else {"temperature": 1.0, "seed": seed}
    reply = _chat(openai_client, tools=TOOLS, tool_choice="required", **sampling)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert len(choice.message.tool_calls) == 1
    _check_call(choice.message.tool_calls[0])


def test_named_tool_call(openai_client) -> None:
    for name in ("get_weather", "get_time"):
        reply = _chat(openai_client, tools=TOOLS, tool_choice={"type": "function", "function": {"name": name}},
                      temperature=1.0, seed=5)
        assert reply.choices[0].finish_reason == "tool_calls"
        _check_call(reply.choices[0].message.tool_calls[0], name)


def test_tool_choice_none_is_plain_text(openai_client) -> None:
    reply = _chat(openai_client, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=8)
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_auto_is_a_call_or_text(openai_client) -> None:
    """auto: a reply starting with '{' is a valid call; anything else is text."""
    for seed in range(4):
        reply = _chat(openai_client, tools=TOOLS, temperature=1.0, seed=seed, max_tokens=30)
        message = reply.choices[0].message
        if message.tool_calls:
            assert reply.choices[0].finish_reason == "tool_calls"
            _check_call(message.tool_calls[0])
        else:
            assert not message.content.startswith("{")


@pytest.mark.parametrize("seed", [None, 6])
def test_streamed_tool_call_accumulates_like_the_whole(openai_client, seed) -> None:
    sampling = {"temperature": 0} if seed is None else {"temperature": 1.0, "seed": seed}
    kwargs = dict(model="default", messages=MESSAGES, max_tokens=100, tools=TOOLS, tool_choice="required", **sampling)
    whole = openai_client.chat.completions.create(**kwargs).choices[0].message.tool_calls[0]
    with openai_client.chat.completions.stream(**kwargs) as stream:
        deltas = [event for event in stream if event.type == "tool_calls.function.arguments.delta"]
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert (call.function.name, call.function.arguments) == (whole.function.name, whole.function.arguments)
    assert len(deltas) > 1  # the arguments came in pieces
    _check_call(call)


def test_tool_results_go_into_the_next_prompt(openai_client, daemon) -> None:
    first = _chat(openai_client, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
                  temperature=0)
    call = first.choices[0].message.tool_calls[0]
    messages = MESSAGES + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 degrees"},
    ]
    reply = _chat(openai_client, messages=messages, tools=[WEATHER], temperature=0, max_tokens=8)
    assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")
    # The tool's answer is in the prompt: the same request without it has fewer prompt tokens.
    shorter = _chat(openai_client, messages=messages[:-1] + [{"role": "tool", "tool_call_id": call.id, "content": ""}],
                    tools=[WEATHER], temperature=0, max_tokens=8)
    assert reply.usage.prompt_tokens > shorter.usage.prompt_tokens


# -- bad input ------------------------------------------------------------------------------------
def _post(daemon, body) -> httpx.Response:
    return httpx.post(daemon.url + "/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 4, **body},
                      headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)


@pytest.mark.parametrize("body, param, words", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strin"}}}},
     "response_format", "strin"),
    ({"response_format": {"type": "json_schema",
                          "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": True}}}},
     "response_format", "uniqueItems"),
    ({"response_format": {"type": "json_schema"}}, "response_format", "json_schema"),
    ({"response_format": {"type": "xml"}}, "response_format", "response_format"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "not": {}}}}]},
     "tools", "tool 'f'"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]}, "tools", "object"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools", "name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": [1]}}]}, "tools", "parameters"),
    ({"tools": [WEATHER, WEATHER]}, "tools", "two tools"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "nope"),
    ({"tool_choice": "required"}, "tool_choice", "tools"),
    ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "response_format", "combined"),
    ({"tools": TOOLS, "translate": True}, "translate", "translate"),
])
def test_bad_structured_requests_are_400(daemon, body, param, words) -> None:
    response = _post(daemon, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert words in error["message"]


def test_tool_messages_still_need_tools(daemon) -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "tool", "content": "42", "tool_call_id": "a"}]
    response = _post(daemon, {"messages": messages})
    assert response.status_code == 400 and "without 'tools'" in response.json()["error"]["message"]


def test_ask_through_the_daemon_with_a_schema(daemon, tmp_path) -> None:
    """`neuro ask --backend daemon --json-schema`: the schema travels as response_format."""
    import os
    import subprocess
    import sys

    path = tmp_path / "schema.json"
    path.write_text(json.dumps(PERSON))
    env = {**os.environ, "NEURO_DAEMON_URL": daemon.url, "NEURO_DAEMON_API_KEY": API_KEY}
    result = subprocess.run([sys.executable, "-m", "neuro_bitnet.cli.main", "ask", "Describe a user.", "--backend",
                             "daemon", "--json-schema", str(path), "-t", "0", "-n", "100", "--json"],
                            env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["backend"] == "daemon"
    jsonschema.validate(json.loads(out["answer"]), PERSON)
