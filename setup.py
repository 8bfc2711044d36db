"""Package layout: ``segmentation/mmseg_custom`` -> ``mmseg_custom`` and
``segmentation/ops`` -> ``ms_deform_attn``. Metadata lives in pyproject.toml.

Optional: ``MS_DEFORM_ATTN_BUILD_EXT=1 pip install --no-build-isolation -e .`` also compiles the
ms_deform_attn kernels (C++ CPU, plus CUDA when torch has CUDA and nvcc is found; architectures from
``TORCH_CUDA_ARCH_LIST``). Without that variable nothing is compiled and torch is not imported.
"""
import glob
import os

from setuptools import find_packages, setup


def _packages() -> list[str]:
    plugin = find_packages("segmentation", include=["mmseg_custom", "mmseg_custom.*"])
    ops = find_packages("segmentation", include=["ops", "ops.*"])
    return plugin + ["ms_deform_attn" + name[len("ops"):] for name in ops]


def _ms_deform_attn_extensions() -> dict:
    """ext_modules / cmdclass for the compiled kernels, only when asked for."""
    if os.environ.get("MS_DEFORM_ATTN_BUILD_EXT") != "1":
        return {}
    import torch
    from torch.utils import cpp_extension

    csrc = "segmentation/ops/csrc"
    flags = {"cxx": ["-O3"], "nvcc": ["-O3", "-lineinfo"]}
    modules = [cpp_extension.CppExtension("ms_deform_attn._C_cpu", [f"{csrc}/cpu_kernels.cpp"],
                                          include_dirs=[os.path.abspath(csrc)],
                                          extra_compile_args={"cxx": ["-O3", "-fopenmp"]},
                                          extra_link_args=["-fopenmp"])]
    if torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None:
        modules.append(cpp_extension.CUDAExtension("ms_deform_attn._C_cuda", sorted(glob.glob(f"{csrc}/cuda_*.cu")),
                                                   include_dirs=[os.path.abspath(csrc)],
                                                   extra_compile_args=flags))
    return {"ext_modules": modules, "cmdclass": {"build_ext": cpp_extension.BuildExtension}}


setup(
    packages=_packages(),
    package_dir={
        "mmseg_custom": "segmentation/mmseg_custom",
        "ms_deform_attn": "segmentation/ops",
    },
    package_data={"ms_deform_attn": ["csrc/*", "csrc/**/*"]},
    **_ms_deform_attn_extensions(),
)
