"""Conversion streams: peak memory grows by a bounded slab, not by the checkpoint's size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.synthetic_checkpoint import write_checkpoint

CHILD = r"""
import json, sys
from neuro_bitnet.models.convert import convert_checkpoint

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

before = hwm()
result = convert_checkpoint(sys.argv[1], sys.argv[2])
print(json.dumps({"before": before, "after": hwm(), "size": result.size}))
"""


@pytest.mark.slow
def test_peak_memory_is_bounded(tmp_path: Path) -> None:
    # 8 layers of 1024 x 2816 (n_ff not a multiple of 128 rows' worth: 2816 = 22 * 128, and
    # 1000-wide down_proj rows below are not) plus a 32000-row embedding: ~ 420 MB of float32.
    total = write_checkpoint(tmp_path / "ckpt", n_embd=1024, n_ff=2900, n_layer=8, n_head=16, n_vocab=32000, shards=2)
    assert total > 400e6
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "ckpt"), str(tmp_path / "out.gguf")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    mem = json.loads(out.stdout)
    growth = mem["after"] - mem["before"]
    # Slabs are 32 MB of source (16 MB for float tensors) plus their float32 temporaries.
    assert growth < 250e6, f"peak RSS grew by {growth / 1e6:.0f} MB converting {total / 1e6:.0f} MB"
    assert mem["size"] > 0
