"""The ternary matmuls of a decode step, alone: kernel variants side by side, interleaved.

Compiles benchmarks/kernels/ternary_stream.c against the engine's C sources once per variant
(a variant is a set of -D flags overriding a kernel constant, e.g. the prefetch distance), then
runs every variant and token count in turn for --rounds rounds and prints the medians: ms for
the 30 layers' matmuls of a BitNet b1.58 2B-4T shaped model (521 MB of I2_S weights, 2 threads),
and each variant's time against the first.

    python benchmarks/ternary_stream.py [--tokens 1,2,4,8] [--rounds 5] [--file F]
        [--variant NAME=-DFLAG=VALUE,...]...

--file maps the weights from a file (page-cache pages, as the engine maps a GGUF) instead of
anonymous memory. The default variants compare the avx512vnni tiles' L2 prefetch 8 KB ahead
with the L1 prefetch 4 KB ahead of the AVX2 tiles, the avx2 set, and (on a CPU with AMX-INT8)
the amx set.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "src" / "neuro_bitnet" / "engine" / "csrc"
DRIVER = Path(__file__).resolve().parent / "kernels" / "ternary_stream.c"
DEFAULT_VARIANTS = [
    "vnni-L2-8K=",
    "vnni-L1-4K=-DNB_VNNI_PREFETCH=4096,-DNB_VNNI_PREFETCH_HINT=_MM_HINT_T0",
    "avx2=@avx2",
]
# On a CPU with AMX-INT8 the default run also times the amx set (its AMX tiles from
# NB_AMX_MIN_TOKENS tokens on; -DNB_AMX_MIN_TOKENS=1 puts one token on them too).
AMX_VARIANT = "amx=@amx"


def default_variants() -> list[str]:
    from neuro_bitnet.engine import _core

    return DEFAULT_VARIANTS + ([AMX_VARIANT] if _core.cpu_features()["amx"] else [])


def build(flags: list[str], out: Path) -> None:
    """Compiles the driver with the engine's kernels (as setup.py does) plus `flags`."""
    sources = [DRIVER, *(CSRC / n for n in ("ternary_kernels.c", "ternary_amx.c", "float_kernels.c", "kernels.c",
                                             "cpu.c", "threadpool.c"))]
    cmd = ["gcc", "-O3", "-std=c11", "-fno-strict-aliasing", "-ffp-contract=off", "-pthread",
           f"-I{CSRC}", *flags, *map(str, sources), "-o", str(out), "-lm"]
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", default="1,2,4,8", help="activation rows per matmul (sequences in a step)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--file", help="map the weights from this file (at least 521 MB)")
    ap.add_argument("--offset", type=int, default=0,
                    help="from this byte of --file (e.g. a GGUF's first ternary tensor)")
    ap.add_argument("--variant", action="append",
                    help="NAME=[@ISA,]-DFLAG=VALUE,...: gcc flags, and the kernel set (default avx512vnni)")
    args = ap.parse_args()
    tokens = [int(t) for t in args.tokens.split(",")]
    variants = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, spec in enumerate(args.variant or default_variants()):
            name, _, rest = spec.partition("=")
            items = [f for f in rest.split(",") if f]
            isa = items.pop(0)[1:] if items and items[0].startswith("@") else "avx512vnni"
            flags = items
            exe = Path(tmp) / f"v{i}"
            build(flags, exe)
            variants.append((name, isa, exe))
        times: dict[tuple[str, int], list[float]] = {}
        for rnd in range(args.rounds):
            for n in tokens:
                for name, isa, exe in variants:
                    cmd = [str(exe), isa, str(n), *([args.file, str(args.offset)] if args.file else [])]
                    median_ms = float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()[0])
                    times.setdefault((name, n), []).append(median_ms)
            print(f"round {rnd + 1}/{args.rounds} done", flush=True)
    source = f"mapped from {args.file}" if args.file else "anonymous memory"
    print(f"\nternary matmuls of one step, 30 layers of 2B-4T shapes, weights in {source}, 2 threads; "
          f"medians of {args.rounds} rounds (each the median of 9 passes)")
    print("| tokens | " + " | ".join(f"{name} ms" for name, _, _ in variants) + " | " +
          " | ".join(f"{name} vs {variants[0][0]}" for name, _, _ in variants[1:]) + " |")
    print("|---" * (2 * len(variants)) + "|")
    for n in tokens:
        med = [statistics.median(times[(name, n)]) for name, _, _ in variants]
        ratios = [f"{m / med[0]:.2f}x" for m in med[1:]]
        print(f"| {n} | " + " | ".join(f"{m:.1f}" for m in med) + " | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
