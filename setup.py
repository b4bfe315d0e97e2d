"""Builds the C compute core (`neuro_bitnet.engine._core`).

Everything else lives in pyproject.toml. The core is compiled for the baseline ISA; the AVX2
kernels are compiled per function (``__attribute__((target))``) and chosen at run time.
"""
import glob
import sys

from setuptools import Extension, setup

# -ffp-contract=off: no implicit fused multiply-adds. Scalar code inlined into the AVX2 kernels
# would otherwise round differently from the same code on the portable path (the int8
# quantization must give identical results on both).
extra_compile_args = ["-O3", "-std=c11", "-fno-strict-aliasing", "-ffp-contract=off", "-Wall",
                      "-Wno-unused-function"]
extra_link_args = []
if sys.platform != "win32":
    extra_compile_args.append("-pthread")
    extra_link_args.append("-pthread")

core = Extension(
    "neuro_bitnet.engine._core",
    sources=sorted(glob.glob("src/neuro_bitnet/engine/csrc/*.c")),
    # a header change rebuilds the module (incremental builds, build_ext --inplace)
    depends=sorted(glob.glob("src/neuro_bitnet/engine/csrc/*.h")),
    include_dirs=["src/neuro_bitnet/engine/csrc"],
    extra_compile_args=extra_compile_args,
    extra_link_args=extra_link_args,
)

setup(ext_modules=[core])
