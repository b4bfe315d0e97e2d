"""Running `neuro` as a person does: a real process on the tiny fixture model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "bitnet-b1.58" / "model.gguf"


def neuro(env, *args, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neuro_bitnet.cli.main", *args], env=env, input=input,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)


def ask_json(env, *args, input=None) -> dict:
    result = neuro(env, "ask", *args, "--model", str(FIXTURE), "--json", input=input)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
