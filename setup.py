"""Package layout: ``segmentation/mmseg_custom`` -> ``mmseg_custom`` and
``segmentation/ops`` -> ``ms_deform_attn``. Metadata lives in pyproject.toml."""
from setuptools import find_packages, setup


def _packages() -> list[str]:
    plugin = find_packages("segmentation", include=["mmseg_custom", "mmseg_custom.*"])
    ops = find_packages("segmentation", include=["ops", "ops.*"])
    return plugin + ["ms_deform_attn" + name[len("ops"):] for name in ops]


setup(
    packages=_packages(),
    package_dir={
        "mmseg_custom": "segmentation/mmseg_custom",
        "ms_deform_attn": "segmentation/ops",
    },
    package_data={"ms_deform_attn": ["csrc/*", "csrc/**/*"]},
)
