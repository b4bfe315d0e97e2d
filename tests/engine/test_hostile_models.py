"""Hostile or odd model files fail cleanly: slow chat templates, NaN weights, mistyped metadata,
and the earlier ``bitnet-25`` upload of the 2B model loads as ``bitnet-b1.58``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from neuro_bitnet.engine import chat_format, load_model
from neuro_bitnet.engine.synthetic import build_synthetic_model
from neuro_bitnet.errors import EngineError
from neuro_bitnet.server.generation import GenerationSpec, run_chat
from neuro_bitnet.server.worker import DONE, ERROR, JobCancelled, ModelWorker

from support.gguf_edit import rewrite_gguf

NESTED_LOOPS = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
HUGE_STRING = "{{ 'x' * 3000000000 }}"
CHAT = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_model("tiny", tmp_path_factory.mktemp("hostile") / "tiny.gguf")


def _variant(tiny: Path, tmp_path: Path, name: str, **changes) -> Path:
    return rewrite_gguf(tiny, tmp_path / f"{name}.gguf", **changes)


# -- chat templates ----------------------------------------------------------------------------
@pytest.mark.parametrize("template, message", [(NESTED_LOOPS, "took longer than"), (HUGE_STRING, "would build")])
def test_a_hostile_template_fails_and_the_model_stays_usable(tiny, tmp_path, monkeypatch, template, message):
    monkeypatch.setattr(chat_format, "RENDER_SECONDS", 1.0)
    path = _variant(tiny, tmp_path, "template", set_keys={"tokenizer.chat_template": template})
    model = load_model(path, threads=1, ctx_size=64)
    try:
        with pytest.raises(EngineError, match=message):
            model.chat(CHAT, max_tokens=1)
        answer = model.generate([1, 2, 3], max_tokens=2, temperature=0)
        list(answer)  # the model is not wedged
        assert answer.result.prompt_tokens == 3 and answer.result.finish_reason in ("length", "stop")
    finally:
        model.close()


def test_the_daemons_model_thread_stops_a_slow_template_when_the_client_goes(tiny, tmp_path, monkeypatch):
    """The render bound is raised far out of reach: only the cancellation can end the job."""
    monkeypatch.setattr(chat_format, "RENDER_SECONDS", 3600.0)
    path = _variant(tiny, tmp_path, "slow", set_keys={"tokenizer.chat_template": NESTED_LOOPS})
    model = load_model(path, threads=1, ctx_size=64)
    spec = GenerationSpec(max_tokens=2, sampling={"temperature": 0.0})
    started = threading.Event()

    def slow_job(m, job):
        started.set()
        return run_chat(m, job, CHAT, spec)

    async def main():
        worker = ModelWorker(model, max_queue=4)
        job = worker.submit(slow_job)
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 60)
        await asyncio.sleep(0.2)  # rendering by now
        worker.cancel(job)  # what the server does when the client disconnects
        events = [e async for e in job.events()]
        follow = worker.submit(lambda m, j: list(m.generate([1, 2], max_tokens=1, temperature=0)))
        after = [e async for e in follow.events()]
        assert worker.close()
        return events, after

    try:
        events, after = asyncio.run(asyncio.wait_for(main(), timeout=300))
    finally:
        model.close()
    assert events[-1][0] == ERROR and isinstance(events[-1][1], JobCancelled)
    assert after[-1][0] == DONE  # the model thread is free again


# -- weights -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_are_an_engine_error_not_an_index_error(tiny, tmp_path, bad):
    def poison(name: str, data: np.ndarray):
        if name == "output_norm.weight":
            return np.full(data.size // 4, bad, dtype=np.float32).view(np.uint8)
        return None

    model = load_model(_variant(tiny, tmp_path, "nan", tensor=poison), threads=1, ctx_size=64)
    try:
        for temperature in (0.0, 0.7):
            with pytest.raises(EngineError, match="NaN or infinite logits"):
                list(model.generate([1, 2, 3], max_tokens=3, temperature=temperature))
        with pytest.raises(EngineError, match="NaN or infinite logits"):
            model.logits([1, 2, 3])
    finally:
        model.close()


# -- metadata of the wrong type ----------------------------------------------------------------
@pytest.mark.parametrize(
    "key, value, message",
    [
        ("bitnet-b1.58.block_count", "thirty", "block_count must be a number"),
        ("bitnet-b1.58.embedding_length", [256], "embedding_length must be a number"),
        ("bitnet-b1.58.rope.freq_base", "fast", "rope.freq_base must be a number"),
        ("bitnet-b1.58.attention.head_count", 2.5, "head_count must be a number"),
        ("tokenizer.chat_template", 7, "chat_template must be a string, not int"),
        ("general.architecture", 3, "no general.architecture string"),
    ],
)
def test_mistyped_metadata_is_an_engine_error(tiny, tmp_path, key, value, message):
    path = _variant(tiny, tmp_path, "typed", set_keys={key: value})
    with pytest.raises(EngineError, match=message) as info:
        load_model(path, threads=1, ctx_size=64)
    assert "\n" not in str(info.value)


def test_mistyped_metadata_exits_5_from_the_cli(tiny, tmp_path):
    path = _variant(tiny, tmp_path, "cli", set_keys={"bitnet-b1.58.block_count": "thirty"})
    proc = subprocess.run(
        [sys.executable, "-m", "neuro_bitnet.cli.main", "ask", "hi", "--model", str(path), "--no-stream"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 5, proc.stderr
    assert "block_count must be a number" in proc.stderr and "unexpected" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# -- the earlier upload ------------------------------------------------------------------------
def test_the_bitnet_25_upload_loads_as_bitnet_b1_58(tiny, tmp_path):
    old = _variant(tiny, tmp_path, "bitnet25", set_keys={"general.architecture": "bitnet-25"},
                   rename_prefix=("bitnet-b1.58.", "bitnet-25."))
    with load_model(old, threads=1, ctx_size=64) as a, load_model(tiny, threads=1, ctx_size=64) as b:
        assert a.hparams.arch == "bitnet-b1.58" and a.hparams == b.hparams
        np.testing.assert_array_equal(a.logits([1, 2, 3]), b.logits([1, 2, 3]))


# -- files that are not files ------------------------------------------------------------------
def test_a_fifo_as_model_fails_at_once_instead_of_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    result: dict = {}

    def load() -> None:
        try:
            load_model(fifo)
        except EngineError as exc:
            result["error"] = exc

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(60)
    if thread.is_alive():  # unblock the open() so the test process can exit
        with open(fifo, "wb"):
            pass
        pytest.fail("load_model waited on the FIFO")
    assert "not a regular file" in str(result["error"])
