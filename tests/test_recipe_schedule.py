"""Poly (by epoch) + exponential warm-up (by iteration) lr, through a real mmengine Runner."""
from __future__ import annotations

import copy

import pytest
import torch
from mmengine.config import Config

import mmseg_custom  # noqa: F401  (registration)
from mmseg.registry import PARAM_SCHEDULERS

from recipe_toys import run_toy

SCHEDULE = "segmentation/configs/_base_/schedules/mm_sam_adapter_100ep.py"


def expected_lr(base: float, t: int, epoch_len: int, max_epochs: int, warmup_epochs: int) -> float:
    """configs_and_training.md §3: lr_g(e) = base (1 - e/E)^0.9, times 0.1^(1 - t/W) for t < W."""
    regular = base * (1 - (t // epoch_len) / max_epochs) ** 0.9
    warmup_iters = warmup_epochs * epoch_len
    return regular * 0.1 ** (1 - t / warmup_iters) if t < warmup_iters else regular


def test_lr_curve_of_a_small_run(tmp_path, repo_root):
    cfg = Config.fromfile(str(repo_root / SCHEDULE))
    scheduler = copy.deepcopy(cfg.param_scheduler)
    assert [s["type"] for s in scheduler] == ["PolyLRExpWarmup"]
    assert scheduler[0]["warmup_epochs"] == 10 and "end" not in scheduler[0]
    scheduler[0]["warmup_epochs"] = 2  # 6 it/epoch -> W = 12 iterations, 4 epochs = 24 iterations
    optim = copy.deepcopy(cfg.optim_wrapper)
    optim.update(accumulative_counts=1, paramwise_cfg=dict(num_layers=1, layer_decay_rate=0.9))
    rec = run_toy(tmp_path, n=6, max_epochs=4, optim_wrapper=optim, param_scheduler=scheduler)

    bases = [0.9 ** 2 * 2e-4, 0.9 * 2e-4, 2e-4]  # ids 0 (patch_embed), 1 (block 0), 2 (head)
    assert len(rec.lrs) == 24
    assert rec.epochs == [t // 6 for t in range(24)]
    for t, lrs in enumerate(rec.lrs):
        assert len(lrs) == 3
        for base, lr in zip(bases, lrs):
            assert lr == pytest.approx(expected_lr(base, t, 6, 4, 2), rel=1e-12, abs=0), (t, base)
    head = [lrs[2] for lrs in rec.lrs]
    assert head[0] == pytest.approx(2e-5, rel=1e-12)                       # 0.1 x at t = 0
    assert head[6] == pytest.approx(2e-4 * 0.75 ** 0.9 * 0.1 ** 0.5, rel=1e-12)
    assert head[11] == pytest.approx(2e-4 * 0.75 ** 0.9 * 0.1 ** (1 / 12), rel=1e-12)
    assert head[12] == head[17] == pytest.approx(2e-4 * 0.5 ** 0.9, rel=1e-12)  # warm-up over
    assert head[18] == head[23] == pytest.approx(2e-4 * 0.25 ** 0.9, rel=1e-12)
    # layer-decay ratios survive the schedule
    assert all(lrs[0] / lrs[2] == pytest.approx(0.81, rel=1e-12) for lrs in rec.lrs)


def test_scheduler_needs_iteration_updates():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="convert_to_iter_based=True"):
        PARAM_SCHEDULERS.build(dict(type="PolyLRExpWarmup", optimizer=opt, epoch_length=3,
                                    max_epochs=2, by_epoch=True))
    sched = PARAM_SCHEDULERS.build(dict(type="PolyLRExpWarmup", optimizer=opt, end=2,
                                        by_epoch=True, convert_to_iter_based=True,
                                        epoch_length=3, warmup_epochs=1))
    assert (sched.begin, sched.end, sched.warmup_iters) == (0, 6, 3)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
