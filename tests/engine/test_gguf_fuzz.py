"""Fuzzing the GGUF reader: corrupt and truncated files load or raise EngineError, nothing else.

The loop runs in a subprocess so that a crash (segfault, abort) fails the test instead of pytest.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

FUZZ_SCRIPT = textwrap.dedent(
    r'''
    import json, os, struct, sys, time
    from pathlib import Path

    import numpy as np

    from neuro_bitnet.engine.gguf import GGMLType, GGUFFile, GGUFValueType
    from neuro_bitnet.engine.gguf_writer import GGUFWriter
    from neuro_bitnet.errors import EngineError

    work = Path(sys.argv[1])
    rng = np.random.default_rng(int(sys.argv[2]))
    src = work / "valid.gguf"
    w = GGUFWriter(src, "bitnet-b1.58")
    w.add("bitnet-b1.58.block_count", 1)
    w.add("bitnet-b1.58.rope.freq_base", 500000.0)
    w.add("tokenizer.ggml.tokens", ["<s>", "a", "bc", "\u0120d", "é"])
    w.add("tokenizer.ggml.token_type", [3, 1, 1, 1, 1])
    w.add("tokenizer.ggml.scores", [0.0, -1.0, -2.0, -3.0, -4.0])
    w.add("flag", True)
    w.add("small", 3, GGUFValueType.UINT8)
    w.add_tensor("token_embd.weight", rng.standard_normal((5, 32)).astype(np.float32), GGMLType.F16)
    w.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))
    w.add_tensor("q8.weight", rng.standard_normal((2, 32)).astype(np.float32), GGMLType.Q8_0)
    tern = rng.integers(-1, 2, size=(2, 256)).astype(np.int8)
    w.add_ternary("blk.0.attn_q.weight", tern, 0.5)
    w.add_ternary("blk.0.ffn_up.weight", tern, 0.5, GGMLType.TQ2_0)
    w.add_ternary("blk.0.ffn_down.weight", tern, 0.5, GGMLType.TQ1_0)
    w.write()
    blob = src.read_bytes()
    with GGUFFile(src) as g:
        header_end = g.data_offset

    # Thousands of small rewrites: keep them in RAM when the machine offers a tmpfs.
    shm = Path("/dev/shm")
    case_dir = shm if shm.is_dir() and os.access(shm, os.W_OK) else work
    case_path = case_dir / f"neuro-gguf-fuzz-{os.getpid()}.gguf"
    stats = {"loaded": 0, "rejected": 0, "cases": 0, "header_end": header_end, "size": len(blob)}
    deadline = time.monotonic() + 15.0  # the machine may be busy: stop early rather than drag on

    class OutOfTime(Exception):
        pass

    def check(data, label):
        if time.monotonic() > deadline:
            raise OutOfTime
        case_path.write_bytes(bytes(data))
        stats["cases"] += 1
        try:
            with GGUFFile(case_path) as g:
                for name, info in g.tensors.items():  # touching the data must be safe too
                    g.raw(name)
                    if info.ggml_type != GGMLType.I2_S or info.nbytes > 32:
                        g.dequantize(name)
            stats["loaded"] += 1
        except EngineError as exc:
            if not str(exc) or "\n" in str(exc):
                raise AssertionError(f"{label}: bad message {exc!r}")
            stats["rejected"] += 1
        except Exception as exc:
            raise AssertionError(f"{label}: {type(exc).__name__}: {exc}") from exc

    def cases():
        # (a) truncation at every header offset, and at a sample of data offsets
        for cut in range(header_end + 1):
            yield blob[:cut], f"truncate@{cut}"
        for cut in sorted(set(rng.integers(header_end, len(blob), size=60).tolist())):
            yield blob[:cut], f"truncate@{cut}"
        # (b) counts and lengths set to huge or odd values: every 8- and 4-byte window of the header
        u64s = [2**64 - 1, 2**63, 2**40, len(blob), len(blob) + 1]
        u32s = [2**32 - 1, 2**31, 13, 9, 8, 37, 4, 5]
        for pos in range(0, header_end - 7):
            for v in u64s:
                data = bytearray(blob); struct.pack_into("<Q", data, pos, v)
                yield data, f"u64@{pos}={v}"
        for pos in range(0, header_end - 3):
            for v in u32s[:4] if pos % 2 else u32s:
                data = bytearray(blob); struct.pack_into("<I", data, pos, v)
                yield data, f"u32@{pos}={v}"
        # (c) random byte flips anywhere, with a bias to the header
        for i in range(3000):
            data = bytearray(blob)
            for _ in range(int(rng.integers(1, 5))):
                limit = header_end if rng.random() < 0.8 else len(blob)
                data[int(rng.integers(0, limit))] = int(rng.integers(0, 256))
            yield data, f"flip#{i}"

    try:
        for data, label in cases():
            check(data, label)
        stats["complete"] = True
    except OutOfTime:
        stats["complete"] = False
    finally:
        case_path.unlink(missing_ok=True)
    print(json.dumps(stats))
    '''
)


@pytest.mark.slow
def test_fuzz_gguf_reader(tmp_path: Path) -> None:
    script = tmp_path / "fuzz.py"
    script.write_text(FUZZ_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "20251126"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"fuzz run failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}"
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    # On an idle machine every case runs (about 10,000); a busy one may stop at the time box.
    assert stats["cases"] >= 2000, stats
    assert stats["rejected"] > stats["header_end"]  # every header truncation is an error
    assert stats["loaded"] > 0  # some changes (float data, padding, values) leave a valid file


# -- the whole load path: corrupt model files load and run one step, or raise EngineError ---------
MODEL_FUZZ_SCRIPT = textwrap.dedent(
    r'''
    import json, os, struct, sys, time
    from pathlib import Path

    import numpy as np

    from neuro_bitnet.engine import load_model
    from neuro_bitnet.engine.gguf import GGUFFile
    from neuro_bitnet.engine.gguf_writer import GGUFWriter
    from neuro_bitnet.engine.synthetic import BITNET_CHAT_TEMPLATE
    from neuro_bitnet.errors import EngineError

    fixture, work, seed, budget = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    rng = np.random.default_rng(seed)
    # The fixture model plus a real chat template, so that rendering is fuzzed too.
    src = work / "valid.gguf"
    with GGUFFile(fixture) as f:
        w = GGUFWriter(src, f.metadata["general.architecture"])
        for key, value in f.metadata.items():
            if key != "general.architecture":
                w.add(key, value)
        w.add("tokenizer.chat_template", BITNET_CHAT_TEMPLATE)
        for name, info in f.tensors.items():
            w.add_raw_tensor(name, info.shape, info.ggml_type, bytes(f.raw(name)))
        first_tensor = next(iter(f.tensors))
    w.write()
    blob = src.read_bytes()
    with GGUFFile(src) as g:
        header_end = g.data_offset
        meta = dict(g.metadata)
        tensors = [(n, i.shape, i.ggml_type, bytes(g.raw(n))) for n, i in g.tensors.items()]

    def retyped(key, value):
        """The valid file with one key's value replaced (a value of another type)."""
        path = work / "retyped.gguf"
        w = GGUFWriter(path, value if key == "general.architecture" else meta["general.architecture"])
        for k, v in meta.items():
            if k != "general.architecture":
                w.add(k, value if k == key else v)
        for name, shape, ggml_type, data in tensors:
            w.add_raw_tensor(name, shape, ggml_type, data)
        return w.write().read_bytes()

    small_keys_end = blob.find(b"tokenizer.ggml.tokens")  # every key before the big arrays
    template_at = blob.find(b"tokenizer.chat_template")
    table_at = blob.find(struct.pack("<Q", len(first_tensor)) + first_tensor.encode())
    assert 0 < small_keys_end < template_at < table_at < header_end

    shm = Path("/dev/shm")
    case_dir = shm if shm.is_dir() and os.access(shm, os.W_OK) else work
    case_path = case_dir / f"neuro-model-fuzz-{os.getpid()}.gguf"
    stats = {"ran": 0, "rejected": 0, "cases": 0}
    deadline = time.monotonic() + budget
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]

    def check(data, label):
        case_path.write_bytes(bytes(data))
        stats["cases"] += 1
        try:
            model = load_model(case_path, threads=1, ctx_size=64)
            try:
                list(model.chat(chat, max_tokens=1, temperature=0.7, seed=1))
                list(model.generate([1, 2], max_tokens=1, temperature=0))
            finally:
                model.close()
            stats["ran"] += 1
        except EngineError as exc:
            if not str(exc) or "\n" in str(exc):
                raise AssertionError(f"{label}: bad message {exc!r}")
            stats["rejected"] += 1
        except Exception as exc:
            raise AssertionError(f"{label}: {type(exc).__name__}: {exc}") from exc

    def windows(lo, hi, count):
        return sorted(set(rng.integers(lo, hi, size=count).tolist()))

    def cases():
        yield blob, "valid"
        # every key with a value of the wrong type (or a wrong value of its type)
        for key in meta:
            for value in ("x", 7, 2**40, -3, 0.5, True, [1, 2], ["a"], [0.5], ""):
                yield retyped(key, value), f"{key}={value!r}"
        for cut in windows(0, len(blob), 40):
            yield blob[:cut], f"truncate@{cut}"
        # small keys (shapes, types, value types), the chat template and the tensor table
        for lo, hi in ((24, small_keys_end), (template_at - 12, template_at + 300), (table_at, header_end)):
            for pos in windows(lo, hi - 4, 80):
                for v in (0, 1, 2, 5, 6, 8, 9, 12, 255, 2**31, 2**32 - 1):
                    data = bytearray(blob); struct.pack_into("<I", data, pos, v)
                    yield data, f"u32@{pos}={v}"
        while True:  # random byte flips, mostly in the header
            data = bytearray(blob)
            for _ in range(int(rng.integers(1, 4))):
                limit = header_end if rng.random() < 0.8 else len(blob)
                data[int(rng.integers(0, limit))] = int(rng.integers(0, 256))
            yield data, "flip"

    try:
        for data, label in cases():
            if time.monotonic() > deadline:
                break
            check(data, label)
    finally:
        case_path.unlink(missing_ok=True)
    print(json.dumps(stats))
    '''
)


@pytest.mark.slow
def test_fuzz_load_model_and_one_generation_step(tmp_path: Path) -> None:
    """Corrupt copies of a real model (with a chat template): load_model, one chat step and one
    generation step either work or raise a one-line EngineError; never another exception or a
    crash. Bounded by a time budget (the count depends on the machine) and a minimum count."""
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "bitnet-b1.58" / "model.gguf"
    script = tmp_path / "model_fuzz.py"
    script.write_text(MODEL_FUZZ_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(fixture), str(tmp_path), "20261201", "20"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"model fuzz run failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}"
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stats["cases"] >= 100, stats
    assert stats["ran"] >= 1 and stats["rejected"] >= 1, stats
