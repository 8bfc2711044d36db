"""Build the compiled kernels of ``ms_deform_attn`` in place (used by make.sh and the JIT fallback).

Two independent shared libraries, each registering its kernels for the ``ms_deform_attn::forward``
and ``ms_deform_attn::backward`` operators (the schemas, fake implementations and autograd live in
``extension.py``):

* ``cpu``:  csrc/cpu_kernels.cpp (the C++ compiler torch extensions use);
* ``cuda``: csrc/cuda_*.cu (nvcc, one object each; architectures from ``TORCH_CUDA_ARCH_LIST``, else the GPUs
  present, as in ``torch.utils.cpp_extension``).

They land in ``<build root>/<flavour>/ms_deform_attn_<flavour>.so`` next to a stamp of the sources and
flags, so a stale library is rebuilt rather than loaded. Build root: ``$MS_DEFORM_ATTN_BUILD_DIR``, else
``<this folder>/build``. Extra nvcc flags: ``$MS_DEFORM_ATTN_NVCC_FLAGS`` (e.g. ``-DMSDA_BATCH=2``). This file imports nothing from
its package: ``python segmentation/ops/build.py cpu cuda`` works without the project installed.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

PKG_DIR = Path(__file__).resolve().parent
CSRC_DIR = PKG_DIR / "csrc"
BUILD_ROOT = Path(os.environ.get("MS_DEFORM_ATTN_BUILD_DIR") or PKG_DIR / "build")
SOURCES = {"cpu": ["cpu_kernels.cpp"],
           "cuda": ["cuda_ops.cu", "cuda_forward.cu", "cuda_backward_tiled.cu", "cuda_backward_query.cu"]}
HEADERS = ["common.h", "cuda_common.cuh", "cuda_launch.h"]
CFLAGS = ["-O3", "-fopenmp"]  # ATen's parallel_for is an inline "omp parallel": serial without it
CUDA_CFLAGS = ["-O3", "-lineinfo", "-Xptxas=-warn-spills"] + os.environ.get("MS_DEFORM_ATTN_NVCC_FLAGS", "").split()


def library_name(flavour: str) -> str:
    return f"ms_deform_attn_{flavour}"


def library_path(flavour: str) -> Path:
    return BUILD_ROOT / flavour / f"{library_name(flavour)}.so"


def _stamp(flavour: str) -> str:
    """Hash of the sources, headers, flags, torch version and arch list the library depends on."""
    digest = hashlib.sha256()
    for name in SOURCES[flavour] + HEADERS:
        digest.update((CSRC_DIR / name).read_bytes())
    import torch
    digest.update(torch.__version__.encode())
    digest.update(" ".join(CFLAGS).encode())
    if flavour == "cuda":
        digest.update(" ".join(CUDA_CFLAGS).encode())
        digest.update(os.environ.get("TORCH_CUDA_ARCH_LIST", "").encode())
    return digest.hexdigest()


def _stamp_path(flavour: str) -> Path:
    return BUILD_ROOT / flavour / "sources.sha256"


def fresh_library(flavour: str) -> Path | None:
    """The built library when it exists and matches the current sources, else None."""
    path, stamp = library_path(flavour), _stamp_path(flavour)
    if path.is_file() and stamp.is_file() and stamp.read_text().strip() == _stamp(flavour):
        return path
    return None


def build(flavour: str, verbose: bool = False) -> Path:
    """Compile one flavour with ``torch.utils.cpp_extension.load`` (ninja) and return the library.

    Raises whatever the compiler raises (the caller decides whether to fall back).
    """
    from torch.utils import cpp_extension

    build_dir = BUILD_ROOT / flavour
    build_dir.mkdir(parents=True, exist_ok=True)
    cpp_extension.load(
        name=library_name(flavour),
        sources=[str(CSRC_DIR / name) for name in SOURCES[flavour]],
        extra_cflags=CFLAGS,
        extra_cuda_cflags=CUDA_CFLAGS,
        extra_ldflags=["-fopenmp"] if flavour == "cpu" else [],
        extra_include_paths=[str(CSRC_DIR)],
        build_directory=str(build_dir),
        with_cuda=flavour == "cuda",
        is_python_module=False,
        verbose=verbose,
    )
    _stamp_path(flavour).write_text(_stamp(flavour) + "\n")
    return library_path(flavour)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("flavours", nargs="*", default=["cpu", "cuda"], choices=sorted(SOURCES))
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    for flavour in args.flavours:
        path = build(flavour, verbose=args.verbose)
        print(f"built {path}")  # noqa: T201 (command-line tool output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
