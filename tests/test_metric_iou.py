"""MultiModalIoUMetric on a hand-computed example, both conventions, and the Q8 guard."""
from __future__ import annotations

import math

import pytest
import torch

import mmseg_custom  # noqa: F401  (registration)
from mmseg_custom.evaluation import MultiModalIoUMetric

IGN = 255


def _sample(path, gt, pred, condition=None, case=None, subset=None):
    sample = dict(img_path=path, gt_sem_seg=dict(data=torch.tensor([gt])),
                  pred_sem_seg=dict(data=torch.tensor([pred])))
    for key, value in dict(condition=condition, case=case, subset=subset).items():
        if value is not None:
            sample[key] = value
    return sample


# Hand-computed example with K = 3 classes:
# A (fog, ordinary):    gt [[0,0,1],[1,IGN,2]] pred [[0,1,1],[1,0,0]]
#   pixels (gt,pred) without the ignored one: (0,0) (0,1) (1,1) (1,1) (2,0)
#   I = [1,2,0]  U = [3,3,1]  L = [2,2,1]
# B (night, motionblur): gt [[0,0],[0,0]] pred [[0,0],[0,1]]
#   I = [3,0,0]  U = [4,1,0]  L = [4,0,0]   (class 2 absent: IoU 0/0 = NaN)
# C (fog, motionblur):  gt [[2]] pred [[2]]
#   I = [0,0,1]  U = [0,0,1]  L = [0,0,1]
SAMPLES = [
    _sample("a.png", [[0, 0, 1], [1, IGN, 2]], [[0, 1, 1], [1, 0, 0]], "fog", "ordinary", "easy"),
    _sample("b.png", [[0, 0], [0, 0]], [[0, 0], [0, 1]], "night", "motionblur", "hard"),
    _sample("c.png", [[2]], [[2]], "fog", "motionblur", "easy"),
]
# global: I = [4,2,1], U = [7,4,2], L = [6,2,2]
GLOBAL = dict(aAcc=100 * 7 / 10, mIoU=100 * (4 / 7 + 1 / 2 + 1 / 2) / 3,
              mAcc=100 * (4 / 6 + 1 + 1 / 2) / 3)
STANDARD = {
    "fog/ordinary/mIoU": 100 * (1 / 3 + 2 / 3 + 0) / 3,          # A
    "fog/motionblur/mIoU": 100.0,                                 # C: classes 0, 1 absent
    "night/motionblur/mIoU": 100 * (3 / 4 + 0) / 2,               # B: class 2 absent
    "condition/fog/mIoU": 100 * (1 / 3 + 2 / 3 + 1 / 2) / 3,      # A+C: I=[1,2,1] U=[3,3,2]
    "condition/night/mIoU": 37.5,
    "case/ordinary/mIoU": 100 / 3,
    "case/motionblur/mIoU": 100 * (3 / 4 + 0 + 1) / 3,            # B+C: I=[3,0,1] U=[4,1,1]
    "mIoU_conditions_mean": (50 + 37.5) / 2,
    "mIoU_cases_mean": (100 / 3 + 175 / 3) / 2,
}
NAN_TO_ZERO = dict(STANDARD, **{
    "fog/motionblur/mIoU": 100 / 3,
    "night/motionblur/mIoU": 25.0,
    "condition/night/mIoU": 25.0,
    "mIoU_conditions_mean": (50 + 25) / 2,
})


def _evaluate(samples, **kwargs):
    metric = MultiModalIoUMetric(**kwargs)
    metric.dataset_meta = dict(classes=("a", "b", "c"))
    metric.process({}, samples)
    return metric.compute_metrics(metric.results)


@pytest.mark.parametrize("nan_to_num,expected", [(None, STANDARD), (0, NAN_TO_ZERO)])
def test_hand_computed_example(nan_to_num, expected):
    metrics = _evaluate(SAMPLES, nan_to_num=nan_to_num)
    assert set(metrics) == set(GLOBAL) | set(expected)
    for key, value in {**GLOBAL, **expected}.items():
        assert math.isclose(metrics[key], value, rel_tol=1e-12), key


def test_conventions_differ_on_absent_class_and_subsets():
    alone = _evaluate(SAMPLES[1:2], breakdown=False)
    assert alone == pytest.approx(dict(aAcc=75.0, mIoU=37.5, mAcc=75.0))
    alone = _evaluate(SAMPLES[1:2], breakdown=False, nan_to_num=0)
    assert alone == pytest.approx(dict(aAcc=75.0, mIoU=25.0, mAcc=25.0))
    subsets = _evaluate(SAMPLES, breakdown=False, by_subset=True)
    assert subsets["subset/easy/mIoU"] == pytest.approx(50.0)     # A+C
    assert subsets["subset/hard/mIoU"] == pytest.approx(37.5)     # B
    assert "condition/fog/mIoU" not in subsets


def test_errors():
    with pytest.raises(ValueError, match="evaluated more than once"):
        _evaluate(SAMPLES + SAMPLES[:1])
    with pytest.raises(ValueError, match="b.png: prediction shape"):
        _evaluate([_sample("b.png", [[0, 0]], [[0], [0]])])
    with pytest.raises(ValueError, match=r"x.png: ground-truth values outside \[0, 3\)"):
        _evaluate([_sample("x.png", [[0, 7]], [[0, 0]])])
    with pytest.raises(ValueError, match="no 'subset'"):
        _evaluate([_sample("x.png", [[0]], [[0]])], by_subset=True)


def test_group_by_weather_time_and_auto_breakdown():
    samples = []
    for sample, (weather, time) in zip(SAMPLES, [("fog", "day"), ("snow", "night"),
                                                 ("fog", "night")]):
        sample = {k: v for k, v in sample.items() if k not in ("condition", "case")}
        samples.append(dict(sample, weather=weather, time=time))
    metrics = _evaluate(samples, group_by=("weather", "time"))
    # weather fog = A + C, snow = B; time day = A, night = B + C (as the DeLiVER example)
    assert metrics["weather/fog/mIoU"] == pytest.approx(STANDARD["condition/fog/mIoU"])
    assert metrics["time/night/mIoU"] == pytest.approx(STANDARD["case/motionblur/mIoU"])
    assert metrics["fog/day/mIoU"] == pytest.approx(STANDARD["fog/ordinary/mIoU"])
    assert metrics["mIoU_weathers_mean"] == pytest.approx(STANDARD["mIoU_conditions_mean"])
    assert metrics["mIoU_times_mean"] == pytest.approx(STANDARD["mIoU_cases_mean"])
    # automatic: no breakdown when a sample lacks the keys
    assert set(_evaluate(samples)) == {"aAcc", "mIoU", "mAcc"}
    with pytest.raises(ValueError, match="has no 'condition'/'case'"):
        _evaluate(samples, breakdown=True)
