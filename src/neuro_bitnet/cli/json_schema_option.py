"""`--json-schema FILE` / `--json-object`: constrain an answer to JSON (see engine.constrained)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

json_schema_options = [
    click.option("--json-schema", "json_schema_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 default=None, help="Answer with JSON matching the JSON schema in FILE (constrained decoding)."),
    click.option("--json-object", is_flag=True, help="Answer with a JSON object (any keys)."),
]


def load_json_schema(path: Path | None, json_object: bool) -> dict[str, Any] | bool | None:
    """The schema the options ask for, checked now (a GrammarError names what is wrong)."""
    if path is not None and json_object:
        raise click.UsageError("give --json-schema or --json-object, not both")
    if json_object:
        return {"type": "object"}
    if path is None:
        return None
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise click.BadParameter(f"{path}: not a JSON file ({exc})", param_hint="--json-schema") from None
    from neuro_bitnet.engine.constrained import Grammar

    Grammar.json_schema(schema)  # invalid or unsupported schemas fail before the model loads
    return schema
