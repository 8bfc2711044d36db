"""The released configs build the released state-dict layout (keys, shapes, parameter
counts), and released checkpoints convert and load strictly (spec model.md §12,
state_dict_listing.md)."""
from __future__ import annotations

import argparse
import importlib.util
import math
import pickle
import re
from collections import OrderedDict
from pathlib import Path

import mmseg_custom  # noqa: F401
import numpy as np
import pytest
import torch
from adapter_configs import single_thread  # noqa: F401  (autouse fixture)
from adapter_configs import BUFFER_SUFFIXES, released_layout, released_model
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmseg.registry import MODELS

TOOL = (Path(__file__).resolve().parents[1] / "segmentation" / "tools"
        / "convert_released_checkpoint.py")
LISTING = Path(__file__).resolve().parents[1].parent / "shared" / "spec" / "state_dict_listing.md"
EXPECTED_PARAMS = {"deliver": 459_052_621, "fmb": 458_979_148, "muses": 459_052_621 - 6 * 513}
CONFIG_DIR = Path(__file__).resolve().parents[1] / "segmentation" / "configs"
REPO_CONFIGS = {"deliver": "deliver/mm_sam_adapter_large_deliver_1024_rgb_depth.py",
                "fmb": "fmb/mm_sam_adapter_large_fmb_800_rgb_thermal.py",
                "muses": "muses/mm_sam_adapter_large_muses_1024_rgb_lidar.py"}
DATASET_LAYOUT = {"deliver": (1024, 25), "fmb": (800, 14), "muses": (1024, 19)}


def _meta_model(dataset: str) -> torch.nn.Module:
    with torch.device("meta"):
        return MODELS.build(released_model(dataset))


def _shapes(model: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def deliver_model() -> torch.nn.Module:
    return _meta_model("deliver")


def _parse_listing() -> dict[str, tuple]:
    if not LISTING.is_file():
        pytest.skip(f"{LISTING} not found (the spec sits beside the checkout)")
    out = {}
    for line in LISTING.read_text().splitlines():
        found = re.match(r"^((?:backbone|decode_head)\.\S+) \[([\d, ]*)\]$", line.strip())
        if found:
            out[found.group(1)] = tuple(int(v) for v in found.group(2).split(",") if v.strip())
    return out


def _diff(actual: dict, expected: dict) -> str:
    missing = sorted(set(expected) - set(actual))
    unexpected = sorted(set(actual) - set(expected))
    shapes = sorted(k for k in set(actual) & set(expected) if actual[k] != expected[k])
    return f"missing {missing[:10]}, unexpected {unexpected[:10]}, shapes {shapes[:10]}"


def test_deliver_matches_spec_listing(deliver_model):
    listing = _parse_listing()
    assert len(listing) == 1450
    actual = _shapes(deliver_model)
    assert actual == listing, _diff(actual, listing)


@pytest.mark.parametrize("dataset", ["deliver", "fmb", "muses"])
def test_released_layout_and_parameter_count(dataset, deliver_model):
    model = deliver_model if dataset == "deliver" else _meta_model(dataset)
    expected = released_layout(*DATASET_LAYOUT[dataset])
    actual = _shapes(model)
    assert len(actual) == 1450
    assert actual == expected, _diff(actual, expected)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == EXPECTED_PARAMS[dataset]
    assert n_params == sum(math.prod(s) for k, s in expected.items()
                           if not k.endswith(BUFFER_SUFFIXES))


def test_fmb_and_muses_differ_from_deliver_exactly_as_listed(deliver_model):
    deliver = _shapes(deliver_model)
    fmb, muses = _shapes(_meta_model("fmb")), _shapes(_meta_model("muses"))
    assert set(fmb) == set(deliver) == set(muses)
    fmb_diff = {k: fmb[k] for k in deliver if fmb[k] != deliver[k]}
    norm = "backbone.spm.smart_fusion.fuse_blocks.{}.norm.{}"
    expected = {norm.format(i, p): (n,) for i, n in enumerate((40000, 10000, 2500, 625))
                for p in ("weight", "bias")}
    expected.update({"decode_head.conv_seg.weight": (14, 512, 1, 1),
                     "decode_head.conv_seg.bias": (14,)})
    assert fmb_diff == expected
    muses_diff = {k: muses[k] for k in deliver if muses[k] != deliver[k]}
    assert muses_diff == {"decode_head.conv_seg.weight": (19, 512, 1, 1),
                          "decode_head.conv_seg.bias": (19,)}


@pytest.mark.parametrize("dataset", sorted(REPO_CONFIGS))
def test_repository_configs_build_the_released_layout(dataset):
    path = CONFIG_DIR / REPO_CONFIGS[dataset]
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with DefaultScope.overwrite_default_scope("mmseg"), torch.device("meta"):
        model = MODELS.build(Config.fromfile(str(path)).model)
    expected = released_layout(*DATASET_LAYOUT[dataset])
    actual = _shapes(model)
    assert actual == expected, _diff(actual, expected)


# ------------------------------------------------------------------ released checkpoints
def convert(argv: list[str]) -> dict:
    """Run the converter CLI in-process."""
    spec = importlib.util.spec_from_file_location("convert_released_checkpoint", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


CLASSES = tuple(f"class{i}" for i in range(25))
PALETTE = [[i, 2 * i, 3 * i] for i in range(25)]


def _released_file(path: Path, state: dict[str, torch.Tensor], extra_meta: dict | None = None
                   ) -> Path:
    """Write a checkpoint the way mmcv 1.x / torch 1.9 / NumPy 1.x did (pickle protocol 2,
    NumPy scalars under ``numpy.core``); tensors are stride-0 views of one element."""
    meta = dict(mmseg_version="0.20.2", mmcv_version="1.4.2", config="model = dict()",
                CLASSES=CLASSES, PALETTE=PALETTE, epoch=100, iter=199200, seed=np.int64(7),
                time="Mon Jan  1 00:00:00 2024",
                hook_msgs=dict(best_score=np.float64(0.5714), last_ckpt="epoch_100.pth"))
    meta.update(extra_meta or {})
    optimizer = dict(state={0: dict(step=3, exp_avg=torch.zeros(2))},
                     param_groups=[dict(lr=2e-4, params=[0])])
    ckpt = dict(meta=meta, state_dict=OrderedDict(state), optimizer=optimizer)
    torch.save(ckpt, path, pickle_protocol=2, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    legacy = data.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")
    assert legacy != data
    path.write_bytes(legacy)
    return path


def _synthetic_state(layout: dict[str, tuple]) -> dict[str, torch.Tensor]:
    return {k: (torch.zeros((), dtype=torch.int64) if k.endswith("num_batches_tracked")
                else torch.ones(()).expand(shape)) for k, shape in layout.items()}


@pytest.fixture(scope="module")
def deliver_config(tmp_path_factory) -> Path:
    """The repository's DeLiVER config, else the released settings written to a file."""
    repo_config = CONFIG_DIR / REPO_CONFIGS["deliver"]
    if repo_config.is_file():
        return repo_config
    path = tmp_path_factory.mktemp("cfg") / "deliver_released.py"
    path.write_text(f"model = {released_model('deliver')!r}\n")
    return path


def test_synthetic_released_checkpoint_converts_and_loads_strictly(tmp_path, deliver_config):
    layout = _parse_listing() if LISTING.is_file() else released_layout()
    src = _released_file(tmp_path / "released.pth", _synthetic_state(layout))
    dst = tmp_path / "converted.pth"
    convert([str(src), str(dst), "--config", str(deliver_config)])

    converted = torch.load(dst, map_location="cpu", weights_only=True)
    assert set(converted) == {"meta", "state_dict"}
    assert converted["meta"]["dataset_meta"] == dict(classes=CLASSES, palette=PALETTE)
    provenance = converted["meta"]["converted_from"]
    assert provenance["mmseg_version"] == "0.20.2" and provenance["seed"] == 7
    assert provenance["epoch"] == 100 and provenance["iter"] == 199200
    with torch.device("meta"):
        model = MODELS.build(released_model("deliver"))
    result = model.load_state_dict(converted["state_dict"], strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_conversion_names_missing_unexpected_and_mismatched_keys(tmp_path, deliver_config):
    state = _synthetic_state(released_layout())
    del state["backbone.level_embed"]
    state["backbone.not_a_param"] = torch.zeros(1)
    state["decode_head.conv_seg.bias"] = torch.zeros(19)
    src = _released_file(tmp_path / "bad.pth", state)
    with pytest.raises(ValueError) as err:
        convert([str(src), str(tmp_path / "out.pth"), "--config", str(deliver_config)])
    message = str(err.value)
    assert "missing: backbone.level_embed" in message
    assert "unexpected: backbone.not_a_param" in message
    assert "decode_head.conv_seg.bias: [19]" in message and "[25]" in message
    assert not (tmp_path / "out.pth").exists()


def test_unknown_classes_need_trust(tmp_path):
    from mmseg_custom.weights.released import convert_released, load_released_checkpoint

    state = {"decode_head.conv_seg.bias": torch.zeros(3)}
    src = _released_file(tmp_path / "odd.pth", state,
                         extra_meta=dict(args=argparse.Namespace(seed=1)))
    with pytest.raises(pickle.UnpicklingError, match=r"argparse\.Namespace.*--trust"):
        load_released_checkpoint(str(src))
    converted = convert_released(load_released_checkpoint(str(src), trust=True))
    assert list(converted["state_dict"]) == ["decode_head.conv_seg.bias"]
    assert "args" not in converted["meta"]["converted_from"]


def test_module_prefix_is_stripped():
    from mmseg_custom.weights.released import convert_released

    converted = convert_released({"state_dict": {"module.backbone.up.bias": torch.zeros(2)},
                                  "meta": {}})
    assert list(converted["state_dict"]) == ["backbone.up.bias"]
