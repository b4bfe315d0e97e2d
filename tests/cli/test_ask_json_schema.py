"""`neuro ask --json-schema FILE` / `--json-object`: real processes on the random fixture model,
which writes valid JSON only thanks to the constrained sampler."""

from __future__ import annotations

import json

import jsonschema

from support.cli_run import FIXTURE, ask_json, neuro

SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string", "maxLength": 20}, "year": {"type": "integer", "minimum": 1900,
                                                                          "maximum": 2100}},
    "required": ["title", "year"],
    "additionalProperties": False,
}


def test_json_schema_file(env, tmp_path) -> None:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    for args in (["-t", "0"], ["-t", "1.0", "--seed", "3"]):
        result = ask_json(env, "Name a film.", "--json-schema", str(path), "--backend", "native", *args)
        jsonschema.validate(json.loads(result["answer"]), SCHEMA)
        assert result["finish_reason"] == "stop"


def test_json_schema_plain_output_is_the_json(env, tmp_path) -> None:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    result = neuro(env, "ask", "Name a film.", "--model", str(FIXTURE), "--json-schema", str(path), "-t", "0",
                   "--no-stream")
    assert result.returncode == 0, result.stderr
    jsonschema.validate(json.loads(result.stdout), SCHEMA)


def test_json_object(env) -> None:
    result = ask_json(env, "Name a film.", "--json-object", "-n", "40", "-t", "0")
    assert result["answer"].startswith("{")


def test_bad_schema_files_are_clear_errors(env, tmp_path) -> None:
    cases = {"bad.json": ('{"type": ', "not a JSON file"), "unsupported.json": ('{"not": {}}', "not"),
             "wrong.json": ('{"type": "strin"}', "strin")}
    for name, (text, words) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        result = neuro(env, "ask", "hi", "--model", str(FIXTURE), "--json-schema", str(path))
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and words in result.stderr
    result = neuro(env, "ask", "hi", "--model", str(FIXTURE), "--json-schema", str(path), "--json-object")
    assert result.returncode == 2 and "not both" in result.stderr
