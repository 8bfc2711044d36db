"""Gradient accumulation on the global iteration counter (configs_and_training.md §4, Q31)."""
from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper

import mmseg_custom  # noqa: F401  (registration)
from mmseg.registry import OPTIM_WRAPPERS

from recipe_toys import run_toy


def reference_updates(xs: list[float], k: int) -> list[float]:
    """The original hook, written from the spec: loss / k (/ remainder in the last partial
    window), step when (t + 1) % k == 0 or at the last iteration. Returns the value of one
    toy weight (grad of the loss = x, SGD lr 1, start 0) after every iteration."""
    max_iters = len(xs)
    divisible = max_iters // k * k
    remainder = max_iters - divisible
    weight, grad, out = 0.0, 0.0, []
    for t, x in enumerate(xs):
        grad += x / (k if t < divisible else remainder)
        if (t + 1) % k == 0 or t == max_iters - 1:
            weight -= grad
            grad = 0.0
        out.append(weight)
    return out


@pytest.mark.parametrize("wrapper_type", ["CumulativeOptimWrapper", "OptimWrapper"])
def test_windows_straddle_epochs_and_last_window_is_rescaled(tmp_path, wrapper_type):
    # 5 iterations per epoch, 3 epochs = 15 iterations, k = 4: steps after t = 3, 7, 11, 14;
    # the window t = 4..7 crosses the epoch boundary, the last one (12..14) is divided by 3.
    optim = dict(type=wrapper_type, accumulative_counts=4,
                 optimizer=dict(type="SGD", lr=1.0, momentum=0.0, weight_decay=0.0))
    rec = run_toy(tmp_path, n=5, max_epochs=3, optim_wrapper=optim)
    xs = [float(t % 5 + 1) for t in range(15)]
    expected = reference_updates(xs, 4)
    got = [float(p[0, 0]) for p in rec.params]
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-7)
    changed = [t for t in range(15) if t == 0 and got[0] != 0 or t > 0 and got[t] != got[t - 1]]
    assert changed == [3, 7, 11, 14]
    assert got[3] == -(1 + 2 + 3 + 4) / 4
    assert got[7] - got[3] == -(5 + 1 + 2 + 3) / 4
    assert got[14] - got[11] == pytest.approx(-(3 + 4 + 5) / 3, rel=1e-6)


def test_released_wrapper_keeps_the_all_reduce_on_every_micro_step():
    class FakeDDP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(1, 1)
            self.no_sync_calls = 0

        @contextlib.contextmanager
        def no_sync(self):
            self.no_sync_calls += 1
            yield

    def run(wrapper: OptimWrapper, model: FakeDDP) -> int:
        wrapper.initialize_count_status(model, 0, 6)
        for _ in range(6):
            with wrapper.optim_context(model):
                loss = model.lin(torch.ones(1, 1)).sum()
            wrapper.update_params(loss)
        return model.no_sync_calls

    model = FakeDDP()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    released = OPTIM_WRAPPERS.build(dict(type="CumulativeOptimWrapper", optimizer=opt,
                                         accumulative_counts=4))
    assert released.sync_every_step
    assert run(released, model) == 0
    model = FakeDDP()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    lazy = OPTIM_WRAPPERS.build(dict(type="CumulativeOptimWrapper", optimizer=opt,
                                     accumulative_counts=4, sync_every_step=False))
    assert run(lazy, model) == 4  # t = 0, 1, 2, 4 skip the all-reduce; 3 and 5 (last) sync
