"""End to end: the released DeLiVER config, with a reduced model on a synthetic tree, trains
through mmengine's Runner on the CPU (layer decay, schedule, accumulation, validation every
epoch, checkpoints: the latest epoch plus the best mIoU)."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import mmseg_custom  # noqa: F401  (registration)
from mmseg_custom.datasets.synthetic import make_synthetic

CONFIG = (Path(__file__).resolve().parents[1] / "segmentation" / "configs" / "deliver"
          / "mm_sam_adapter_large_deliver_1024_rgb_lidar.py")
SIZE = 64


def reduced(cfg: Config, data_root: str, work_dir: str) -> Config:
    """The released config with every size scaled down (structure and recipe unchanged)."""
    cfg.work_dir, cfg.experiment_name = work_dir, f"recipe_{uuid.uuid4().hex}"
    cfg.model.pretrained = None
    cfg.model.backbone.update(
        with_cp=False, img_size=SIZE, pretrained_size=SIZE, embed_dim=64, depth=4, num_heads=4, window_size=2,
        global_attn_indexes=[1, 3], conv_inplane=16, deform_num_heads=4, checkpoint=None,
        interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]],
        arch=dict(depths=[1, 1, 1, 1], channels=[32, 64, 128, 256]))
    cfg.model.decode_head.update(in_channels=[64] * 4, channels=32)
    cfg.model.decode_head.loss_decode.min_kept = 50
    cfg.model.data_preprocessor.size = (SIZE, SIZE)
    cfg.model.test_cfg.dim = (SIZE, SIZE)
    cfg.optim_wrapper.paramwise_cfg.num_layers = None  # derived from the model: 4 blocks
    cfg.optim_wrapper.accumulative_counts = 3
    cfg.param_scheduler[0].warmup_epochs = 1
    cfg.train_cfg.max_epochs = 2
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg[key]
        loader.update(num_workers=0, persistent_workers=False)
        loader.dataset.data_root = data_root
        for step in loader.dataset.pipeline:
            if step.type == "MultiModalResize":
                step.img_scale = (SIZE, SIZE)
                if "seg_scale" in step:
                    step.seg_scale = (SIZE, SIZE)
            elif step.type == "MultiModalRandomCrop":
                step.crop_size = (SIZE, SIZE)
    return cfg


def build_runner(cfg: Config) -> Runner:
    """``Runner.from_cfg`` without handing over the config text (formatting it is slow)."""
    keys = ("model", "work_dir", "experiment_name", "train_dataloader", "val_dataloader",
            "test_dataloader", "train_cfg", "val_cfg", "test_cfg", "optim_wrapper",
            "param_scheduler", "val_evaluator", "test_evaluator", "default_hooks",
            "custom_hooks", "load_from", "resume", "env_cfg", "log_processor", "log_level",
            "visualizer", "default_scope", "randomness")
    return Runner(**{key: cfg[key] for key in keys})


@pytest.mark.slow
def test_reduced_released_config_trains(tmp_path):
    make_synthetic("deliver", str(tmp_path / "data"), (2, 1, 1), seed=1, size=(SIZE, SIZE))
    cfg = reduced(Config.fromfile(str(CONFIG)), str(tmp_path / "data"), str(tmp_path / "work"))
    torch.manual_seed(0)
    runner = build_runner(cfg)
    runner.train()

    # 2 iterations per epoch x 2 epochs, accumulation 3: steps after iterations 2 and 3
    # (the last window holds 1 iteration)
    optimizer = runner.optim_wrapper.optimizer
    steps = {int(optimizer.state[p]["step"]) for g in optimizer.param_groups for p in g["params"]}
    assert steps == {2}
    names = {g["group_name"] for g in optimizer.param_groups}
    assert {"layer_0_decay", "layer_0_no_decay", "layer_1_decay", "layer_4_no_decay",
            "layer_5_decay", "layer_5_no_decay"} <= names
    head = next(g for g in optimizer.param_groups if g["group_name"] == "layer_5_decay")
    # the last iteration (t = 3, epoch 1) runs at the poly lr of epoch 1, warm-up over
    assert head["lr"] == 2e-4 * (1 - 1 / 2) ** 0.9

    files = sorted(p.name for p in (tmp_path / "work").glob("*.pth"))
    assert "epoch_2.pth" in files and "epoch_1.pth" not in files  # only the latest kept
    assert any(name.startswith("best_mIoU_epoch_") for name in files)
