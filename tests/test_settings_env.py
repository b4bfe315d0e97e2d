"""Every environment variable of the package is read through `config.py` and shown by `neuro config`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from neuro_bitnet.config import ENV_VARS, env_url, load_settings, setting
from neuro_bitnet.errors import ConfigError

SRC = Path(__file__).resolve().parents[1] / "src" / "neuro_bitnet"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))


def test_only_config_reads_the_environment() -> None:
    readers = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
               if re.search(r"os\.environ\.get|os\.getenv|getenv\(|envvar=", p.read_text())]
    # web/ resolves its provider settings (NEURO_BITNET_WEB_*) with its own WebSettings.
    assert sorted(readers) == ["config.py", "web/base.py"]


def test_the_daemon_model_and_retrieval_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = load_settings()
    assert (s.model, s.head, s.embedder, s.daemon_url, s.daemon_api_key, s.debug) == (None,) * 5 + (False,)
    assert s.storage == tmp_path / "data" / "neuro-bitnet" / "index"
    assert env_url() == "http://127.0.0.1:11435"
    for name, value in {"NEURO_BITNET_MODEL": "large", "NEURO_BITNET_HEAD": "exact", "NEURO_BITNET_EMBEDDER": "e",
                        "NEURO_BITNET_STORAGE": str(tmp_path / "ix"), "NEURO_DAEMON_HOST": "::1",
                        "NEURO_DAEMON_PORT": "9", "NEURO_DAEMON_API_KEY": "k-1", "NEURO_BITNET_DEBUG": "1"}.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    assert (s.model, s.head, s.embedder, s.storage) == ("large", "exact", "e", tmp_path / "ix")
    assert (s.daemon_host, s.daemon_port, s.daemon_api_key, s.debug) == ("::1", 9, "k-1", True)
    assert all(s.source(n) == "env" for n in ("model", "head", "embedder", "storage", "daemon_port", "debug"))
    assert setting("daemon_port") == 9 and env_url() == "http://[::1]:9"
    monkeypatch.setenv("NEURO_DAEMON_URL", "http://127.0.0.1:7/")
    assert env_url() == "http://127.0.0.1:7"


def test_bad_values_are_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEURO_DAEMON_PORT", "80000")
    with pytest.raises(ConfigError, match="NEURO_DAEMON_PORT='80000' is outside 0..65535"):
        setting("daemon_port")
    monkeypatch.delenv("NEURO_DAEMON_PORT")
    monkeypatch.setenv("NEURO_DAEMON_API_KEY", "  ")  # a key of spaces is refused, not taken as none
    with pytest.raises(ConfigError, match="API key in NEURO_DAEMON_API_KEY contains a space"):
        load_settings()


def test_neuro_config_shows_every_variable(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "NEURO_DAEMON_PORT": "1234", "NEURO_DAEMON_API_KEY": "s3"}
    out = subprocess.run([sys.executable, "-m", "neuro_bitnet.cli.main", "config", "--json"], env=env,
                         capture_output=True, text=True, timeout=120)
    report = json.loads(out.stdout)["settings"]
    assert {item["env"] for item in report.values()} == set(ENV_VARS.values())
    assert report["daemon_port"] == {"value": 1234, "source": "env", "env": "NEURO_DAEMON_PORT"}
    assert report["daemon_url"]["value"] == "http://127.0.0.1:1234"
    assert report["daemon_api_key"]["value"] == "set" and "s3" not in out.stdout
