"""Settings resolution: flags > environment > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuro_bitnet.config import ENV_VARS, load_settings
from neuro_bitnet.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def test_defaults_follow_the_platform_dirs(tmp_path: Path) -> None:
    s = load_settings()
    assert s.models_dir == tmp_path / "cache" / "neuro-bitnet" / "models"
    assert s.catalog_path == tmp_path / "config" / "neuro-bitnet" / "models.toml"
    assert s.hf_endpoint == "https://huggingface.co"
    assert s.hf_token is None and s.bitnet_cli_path is None
    assert s.isa == "auto"
    assert all(s.source(name) == "default" for name in ENV_VARS)


def test_environment_beats_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEURO_BITNET_MODELS_DIR", str(tmp_path / "m"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("BITNET_CLI_PATH", "~/bin/llama-cli")
    monkeypatch.setenv("NEURO_BITNET_CATALOG", str(tmp_path / "c.toml"))
    monkeypatch.setenv("NEURO_BITNET_TIMEOUT", "1.5")
    monkeypatch.setenv("NEURO_BITNET_DOWNLOAD_RETRIES", "0")
    monkeypatch.setenv("NEURO_BITNET_ISA", " Portable ")
    s = load_settings()
    assert s.models_dir == tmp_path / "m"
    assert s.hf_endpoint == "http://127.0.0.1:9"  # trailing slash dropped
    assert s.hf_token == "hf_secret"
    assert s.bitnet_cli_path == Path.home() / "bin" / "llama-cli"
    assert s.catalog_path == tmp_path / "c.toml"
    assert (s.timeout, s.retries) == (1.5, 0)
    assert s.isa == "portable" and s.source("isa") == "env"
    assert s.source("models_dir") == "env" and s.source("timeout") == "env"


def test_flags_beat_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEURO_BITNET_MODELS_DIR", str(tmp_path / "env"))
    s = load_settings(models_dir=tmp_path / "flag", hf_endpoint=None, timeout="3")
    assert s.models_dir == tmp_path / "flag" and s.source("models_dir") == "flag"
    assert s.timeout == 3.0 and s.source("timeout") == "flag"
    assert s.source("hf_endpoint") == "default"  # None means "flag not given"


def test_empty_token_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "  ")
    assert load_settings().hf_token is None


@pytest.mark.parametrize(
    ("var", "value", "words"),
    [
        ("NEURO_BITNET_TIMEOUT", "soon", "NEURO_BITNET_TIMEOUT must be a positive number"),
        ("NEURO_BITNET_TIMEOUT", "0", "positive"),
        ("NEURO_BITNET_DOWNLOAD_RETRIES", "-1", "whole number"),
        ("HF_ENDPOINT", "huggingface.co", "http(s) URL"),
        ("NEURO_BITNET_ISA", "sse9", "NEURO_BITNET_ISA must be one of auto, amx, avx512vnni, avx2, portable"),
    ],
)
def test_bad_values_are_config_errors(monkeypatch: pytest.MonkeyPatch, var: str, value: str, words: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        load_settings()


def test_unknown_override_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        load_settings(model_dir="x")
