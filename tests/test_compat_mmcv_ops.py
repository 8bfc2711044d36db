"""The mmcv.ops stand-in: mmseg.models imports without compiled ops, and only then."""
import pytest
import torch

from conftest import run_python


def test_mmseg_models_import_fails_without_standin():
    result = run_python("import mmseg.models")
    assert result.returncode != 0
    assert "mmcv._ext" in result.stderr or "mmcv.ops" in result.stderr


def test_mmseg_models_import_with_plugin():
    result = run_python("import mmseg_custom, mmseg.models; "
                        "from mmseg.models.losses import FocalLoss; print('OK')")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_standin_inactive_when_real_ops_exist():
    code = (
        "import sys, types, mmcv\n"
        "real = types.ModuleType('mmcv.ops')\n"
        "def real_getattr(name):\n"
        "    if name.startswith('__'):\n"
        "        raise AttributeError(name)\n"
        "    return 'real ' + name\n"
        "real.__getattr__ = real_getattr\n"
        "sys.modules['mmcv.ops'] = real; mmcv.ops = real\n"
        "from mmseg_custom.compat import install_mmcv_ops_standin\n"
        "assert install_mmcv_ops_standin() is False\n"
        "import mmcv.ops\n"
        "assert mmcv.ops.point_sample == 'real point_sample'\n"
        "import mmseg.models\n"
        "print('OK')\n")
    result = run_python(code)
    assert result.returncode == 0, result.stderr


def test_point_sample_matches_bilinear():
    import mmseg_custom  # noqa: F401  (installs the stand-in)
    import mmcv.ops

    feats = torch.arange(2 * 3 * 4 * 5, dtype=torch.float64).view(2, 3, 4, 5)
    # pixel centres: x = (j + 0.5) / W, y = (i + 0.5) / H read the exact pixel values
    points = torch.tensor([[[0.5 / 5, 0.5 / 4], [4.5 / 5, 3.5 / 4]]] * 2, dtype=torch.float64)
    out = mmcv.ops.point_sample(feats, points)
    assert out.shape == (2, 3, 2)
    assert torch.allclose(out[..., 0], feats[:, :, 0, 0])
    assert torch.allclose(out[..., 1], feats[:, :, 3, 4])
    # halfway between two pixel centres along x: their mean
    mid = mmcv.ops.point_sample(feats, torch.tensor([[[1.0 / 5, 0.5 / 4]]] * 2, dtype=torch.float64))
    assert torch.allclose(mid[..., 0], (feats[:, :, 0, 0] + feats[:, :, 0, 1]) / 2)


def test_missing_ops_fail_clearly():
    import mmseg_custom  # noqa: F401  (installs the stand-in)
    import mmcv.ops

    with pytest.raises(RuntimeError, match="sigmoid_focal_loss is not available"):
        mmcv.ops.sigmoid_focal_loss(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ModuleNotFoundError, match="DeformConv2d is not available"):
        from mmcv.ops import DeformConv2d  # noqa: F401
