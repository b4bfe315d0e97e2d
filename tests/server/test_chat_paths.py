"""The daemon renders chats with the engine's one rule: Microsoft's placeholder template in a
file means the trained BitNet format (system prompt kept, no EOS in the prompt)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from neuro_bitnet.engine import load_model
from neuro_bitnet.engine.synthetic import build_synthetic_model

from support.daemon_proc import DaemonProcess

SYSTEM = "You are a helpful assistant who answers in one short sentence."
CHAT = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi there"}]


@pytest.fixture(scope="module")
def placeholder_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic model: its header mirrors the official file's, placeholder included."""
    return build_synthetic_model("tiny", tmp_path_factory.mktemp("placeholder") / "tiny.gguf")


def test_the_daemon_chats_in_the_trained_format(placeholder_model: Path, tmp_path: Path) -> None:
    with load_model(placeholder_model, threads=1, ctx_size=128) as model:
        trained = model.chat_prompt_ids(CHAT)
        assert model.detokenize(trained).startswith(f"<|begin_of_text|>System: {SYSTEM}<|eot_id|>")
        # Rendered as written the placeholder drops the system prompt: far fewer tokens.
        literal = model.tokenize("<|begin_of_text|>Human: Hi there\n\nBITNETAssistant: <|end_of_text|>",
                                 add_bos=False)
    assert len(trained) > len(literal) + 5
    daemon = DaemonProcess(["--model", str(placeholder_model), "--ctx-size", "128"], tmp_path).wait_ready()
    try:
        response = httpx.post(daemon.url + "/v1/chat/completions", timeout=120,
                              json={"messages": CHAT, "max_tokens": 2, "temperature": 0})
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["prompt_tokens"] == len(trained)
    finally:
        assert daemon.stop() == 0, daemon.output()
