"""Every environment variable the code reads is documented in the README's settings table."""

from __future__ import annotations

from pathlib import Path

from neuro_bitnet import config
from neuro_bitnet.web import base as web_settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_every_environment_variable_is_in_the_readme() -> None:
    variables = set(config.ENV_VARS.values()) | set(web_settings.ENV_VARS.values())
    missing = sorted(v for v in variables if f"`{v}`" not in README)
    assert not missing, f"not in the README: {missing}"
