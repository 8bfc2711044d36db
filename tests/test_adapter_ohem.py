"""OHEM cross-entropy: the PIDNet semantics of head_loss_segmentor.md §3 and the Q11 guards."""
from __future__ import annotations

import math

import mmseg_custom  # noqa: F401
import pytest
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS

IGNORE = 255


def _logits_for(probs: list[list[float]]) -> torch.Tensor:
    """(1, K, 1, N) logits whose softmax over K gives the listed per-pixel probabilities."""
    return torch.tensor(probs, dtype=torch.float64).log().t()[None, :, None, :]


def _ce(p: float) -> float:
    return -math.log(p)


def test_registered_under_the_original_name():
    loss = MODELS.build(dict(type="OhemCrossEntropy"))
    assert (loss.thres, loss.min_kept, loss.ignore_label, loss.loss_name) == (
        0.7, 100000, 255, "loss_ohem")
    assert MODELS.build(dict(type="OhemCrossEntropy", min_kept=0)).min_kept == 1


def test_keeps_pixels_below_the_threshold_when_min_kept_is_small():
    # target probabilities 0.1, 0.5, 0.6, 0.8, 0.9 (+ one ignored pixel)
    score = _logits_for([[0.1, 0.9], [0.5, 0.5], [0.6, 0.4], [0.8, 0.2], [0.9, 0.1],
                         [0.3, 0.7]])
    target = torch.tensor([[[0, 0, 0, 0, 0, IGNORE]]])
    loss = MODELS.build(dict(type="OhemCrossEntropy", min_kept=1))(score, target)
    # threshold = max(p_sorted[1] = 0.5, 0.7) = 0.7 -> pixels with p < 0.7
    expected = (_ce(0.1) + _ce(0.5) + _ce(0.6)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_min_kept_raises_the_threshold():
    score = _logits_for([[0.1, 0.9], [0.5, 0.5], [0.6, 0.4], [0.8, 0.2], [0.9, 0.1]])
    target = torch.zeros(1, 1, 5, dtype=torch.long)
    loss = MODELS.build(dict(type="OhemCrossEntropy", min_kept=4, loss_weight=2.0))
    # threshold = max(p_sorted[min(4, 4)] = 0.9, 0.7) = 0.9; strictly below: 4 pixels
    expected = 2.0 * (_ce(0.1) + _ce(0.5) + _ce(0.6) + _ce(0.8)) / 4
    assert loss(score, target).item() == pytest.approx(expected, rel=1e-12)


def test_matches_the_reference_formula_on_random_batches():
    torch.manual_seed(0)
    score = torch.randn(2, 6, 9, 11, dtype=torch.float64) * 3
    target = torch.randint(0, 6, (2, 9, 11))
    target[0, :4] = IGNORE
    for min_kept in (1, 10, 60, 10_000):
        prob = F.softmax(score, 1).gather(1, target.clamp(max=5)[:, None]).flatten()
        losses = F.cross_entropy(score, target, ignore_index=IGNORE, reduction="none").flatten()
        valid = target.flatten() != IGNORE
        p_sorted, order = prob[valid].sort()
        threshold = max(p_sorted[min(min_kept, valid.sum().item() - 1)].item(), 0.7)
        expected = losses[valid][order][p_sorted < threshold].mean()
        actual = MODELS.build(dict(type="OhemCrossEntropy", min_kept=min_kept))(score, target)
        assert actual.item() == pytest.approx(expected.item(), rel=1e-12)


def test_class_weights_and_mmseg_call_signature():
    score = _logits_for([[0.2, 0.8], [0.6, 0.4]])
    target = torch.tensor([[[0, 1]]])
    loss = MODELS.build(dict(type="OhemCrossEntropy", min_kept=1, class_weight=[1.0, 3.0]))
    value = loss(score, target, weight=None, ignore_index=IGNORE)
    assert value.item() == pytest.approx((_ce(0.2) + 3 * _ce(0.4)) / 2, rel=1e-12)


def test_no_valid_pixel_gives_a_connected_zero():
    score = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = MODELS.build(dict(type="OhemCrossEntropy"))(score, torch.full((1, 2, 2), IGNORE))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert score.grad is not None and not score.grad.any()


def test_nothing_below_the_threshold_falls_back_to_the_hardest_pixels():
    # every target probability is exactly the threshold -> the original returns NaN
    score = torch.zeros(1, 2, 1, 6, requires_grad=True)  # p = 0.5 everywhere, K = 2
    target = torch.zeros(1, 1, 6, dtype=torch.long)
    loss = MODELS.build(dict(type="OhemCrossEntropy", thres=0.5, min_kept=4))(score, target)
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)
    loss.backward()
    assert score.grad is not None and score.grad.any()
    # confident pixels: p = 1 >= any threshold; min_kept larger than the image
    score = torch.tensor([[[[50.0, 50.0]], [[-50.0, -50.0]]]], requires_grad=True)
    target = torch.zeros(1, 1, 2, dtype=torch.long)
    loss = MODELS.build(dict(type="OhemCrossEntropy"))(score, target)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(0.0, abs=1e-20)
    loss.backward()
    assert score.grad is not None


def test_rejects_pixel_weights_and_bad_shapes():
    loss = MODELS.build(dict(type="OhemCrossEntropy"))
    with pytest.raises(ValueError, match="per-pixel weights"):
        loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long),
             weight=torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match=r"expected score \(B, K, H, W\) and target \(B, H, W\)"):
        loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.long))
