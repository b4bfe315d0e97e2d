"""The synthetic models by name: listed, built on first use wherever --model is taken, removable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(NEURO_BITNET_MODELS_DIR=str(tmp_path / "models"), NEURO_DAEMON_URL="http://127.0.0.1:9",
               HF_ENDPOINT="http://127.0.0.1:9")
    env.pop("NEURO_BITNET_CATALOG", None)
    return env


def neuro(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neuro_bitnet.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)


def listing(env) -> dict[str, dict]:
    result = neuro(env, "model", "list", "--json")
    assert result.returncode == 0, result.stderr
    return {m["id"]: m for m in json.loads(result.stdout)}


@pytest.mark.slow
def test_synthetic_models_are_listed_built_on_first_use_and_removed(env, tmp_path):
    models = listing(env)
    assert models["synthetic-2b"]["install"] == "build" and "syn-2b" in models["synthetic-2b"]["aliases"]
    assert models["synthetic-tiny"]["state"] == "absent"

    answer = neuro(env, "ask", "Hello", "--model", "synthetic-tiny", "--json", "--max-tokens", "3",
                   "--temperature", "0")
    assert answer.returncode == 0, answer.stderr
    assert "building the random-weight model once" in answer.stderr
    data = json.loads(answer.stdout)
    assert data["model"] == "synthetic-tiny" and data["usage"]["completion_tokens"] >= 1

    tiny = listing(env)["synthetic-tiny"]
    path = Path(tiny["path"])
    assert tiny["state"] == "verified" and path.is_file()
    assert path.parent == tmp_path / "models" / "synthetic"
    table = neuro(env, "model", "list").stdout
    assert any(line.startswith("synthetic-tiny") and "built" in line and str(path) in line
               for line in table.splitlines())

    again = neuro(env, "ask", "Hello", "--model", "syn-tiny", "--json", "--max-tokens", "3", "--temperature", "0")
    assert again.returncode == 0 and "building" not in again.stderr  # built once
    assert json.loads(again.stdout)["answer"] == data["answer"]

    removed = neuro(env, "model", "remove", "synthetic-tiny", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert not path.exists() and listing(env)["synthetic-tiny"]["state"] == "absent"


@pytest.mark.slow
def test_bench_ends_with_the_file_and_what_to_try_next(env, tmp_path):
    result = neuro(env, "bench", "--synthetic", "tiny", "--repeat", "1", "--prompt-tokens", "8", "--gen-tokens", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    path = tmp_path / "models" / "synthetic"
    model_line = next(line for line in lines if line.startswith("model file: "))
    assert Path(model_line[len("model file: "):]).parent == path
    rest = "\n".join(lines[lines.index(model_line):])
    assert 'neuro ask "Hello" --model synthetic-tiny' in rest and "neuro chat --model synthetic-tiny" in rest
    assert "neuro model download 2b" in rest
