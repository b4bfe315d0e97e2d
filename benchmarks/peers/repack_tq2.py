"""Repack a BitNet b1.58 I2_S GGUF as TQ2_0 for upstream llama.cpp (lossless for the weights).

Upstream llama.cpp has TQ2_0 kernels but no I2_S type and no ``bitnet-b1.58`` architecture; it
knows only ``bitnet`` (the 1bitLLM models, SiLU FFN). With ``--arch bitnet`` the metadata keys
are renamed so the file loads there: the network then computes SiLU where the model wants ReLU²,
which changes the outputs but not the work done, so it is fine for a speed comparison only.

    python benchmarks/peers/repack_tq2.py model-i2_s.gguf model-tq2_0.gguf [--arch bitnet]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from neuro_bitnet.engine import quants
from neuro_bitnet.engine.gguf import GGMLType, GGUFFile
from neuro_bitnet.engine.gguf_writer import GGUFWriter

FILE_TYPE_MOSTLY_TQ2_0 = 37  # llama.cpp's LLAMA_FTYPE_MOSTLY_TQ2_0


def repack_i2s_to_tq2_0(src: Path, dst: Path, arch: str | None = "bitnet") -> Path:
    """Write ``dst``: ``src`` with every I2_S tensor as TQ2_0 and, if ``arch`` is given, the
    architecture (and its metadata key prefix) renamed to ``arch``. Returns ``dst``."""
    with GGUFFile(src) as f:
        old_arch = f.metadata["general.architecture"]
        new_arch = arch or old_arch
        writer = GGUFWriter(dst, new_arch)
        for key, value in f.metadata.items():
            if key in ("general.architecture", "general.alignment"):
                continue
            if key.startswith(old_arch + "."):
                key = new_arch + key[len(old_arch):]
            if key == "general.file_type":
                value = FILE_TYPE_MOSTLY_TQ2_0
            writer.add(key, value)
        for name, info in f.tensors.items():
            if info.ggml_type == GGMLType.I2_S:
                packed, scale = f.ternary(name)
                data = quants.tq2_0_from_i2s(packed, info.n_elements, scale)
                writer.add_raw_tensor(name, info.shape, GGMLType.TQ2_0, data)
            else:
                writer.add_raw_tensor(name, info.shape, info.ggml_type, f.raw(name))
        return writer.write()


def cached_repack(src: Path, cache_dir: Path) -> Path:
    """The TQ2_0 (arch ``bitnet``) repack of ``src`` in ``cache_dir``, written once (atomically)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    dst = cache_dir / f"{src.stem}-{src.stat().st_size}.tq2_0-bitnet.gguf"
    if not dst.is_file():
        print(f"repacking I2_S -> TQ2_0 (arch bitnet) into {dst} ...", file=sys.stderr)
        part = dst.with_name(dst.name + ".part")
        repack_i2s_to_tq2_0(src, part, arch="bitnet")
        os.replace(part, dst)
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--arch", default="bitnet", help="architecture to write ('' keeps the original)")
    args = parser.parse_args(argv)
    repack_i2s_to_tq2_0(args.src, args.dst, args.arch or None)
    print(args.dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
