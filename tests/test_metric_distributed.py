"""MultiModalIoUMetric under 2-process (gloo) evaluation equals the 1-process result (Q8)."""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import mmseg_custom  # noqa: F401  (registration)

NUM_SAMPLES = 5            # not divisible by the world size: the sampler pads one sample
CLASSES = ("a", "b", "c", "d")


def _samples(num: int = NUM_SAMPLES) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    conditions, cases = ("fog", "night"), ("ordinary", "motionblur", "underexposure")
    samples = []
    for index in range(num):
        gt = torch.randint(0, len(CLASSES), (1, 6, 7), generator=generator)
        gt[0, 0, : index + 1] = 255
        pred = torch.where(torch.rand(gt.shape, generator=generator) < 0.6, gt.clamp(max=3),
                           torch.randint(0, len(CLASSES), gt.shape, generator=generator))
        samples.append(dict(img_path=f"s{index}.png", gt_sem_seg=dict(data=gt),
                            pred_sem_seg=dict(data=pred), condition=conditions[index % 2],
                            case=cases[index % 3]))
    return samples


def _evaluate(samples: list[dict], batch_size: int = 2) -> dict:
    from mmengine.dataset import DefaultSampler
    from mmengine.evaluator import Evaluator
    from torch.utils.data import DataLoader

    from mmseg_custom.evaluation import MultiModalIoUMetric

    metric = MultiModalIoUMetric()
    evaluator = Evaluator([metric])
    evaluator.dataset_meta = dict(classes=CLASSES)
    loader = DataLoader(samples, batch_size=batch_size, collate_fn=list,
                        sampler=DefaultSampler(samples, shuffle=False))
    seen = 0
    for batch in loader:
        evaluator.process(data_samples=batch, data_batch=None)
        seen += len(batch)
    metrics = evaluator.evaluate(len(samples))
    metrics["_seen_by_rank"] = seen
    return metrics


def _worker(rank: int, world_size: int, init_file: str, queue) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    try:
        queue.put((rank, _evaluate(_samples())))
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one(tmp_path):
    single = _evaluate(_samples())
    assert single["_seen_by_rank"] == NUM_SAMPLES
    context = mp.get_context("spawn")
    queue = context.Queue()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    procs = [context.Process(target=_worker, args=(rank, 2, str(tmp_path / "init"), queue))
             for rank in range(2)]
    for proc in procs:
        proc.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    # each rank saw 3 samples (5 padded to 6): one sample was evaluated twice by the loop
    assert results[0]["_seen_by_rank"] == results[1]["_seen_by_rank"] == 3
    for rank in range(2):
        metrics = {k: v for k, v in results[rank].items() if not k.startswith("_")}
        expected = {k: v for k, v in single.items() if not k.startswith("_")}
        assert metrics.keys() == expected.keys()
        for key, value in expected.items():
            assert math.isclose(metrics[key], value, rel_tol=1e-12), key
    assert "fog/ordinary/mIoU" in single and "condition/night/mIoU" in single


def test_counting_a_sample_twice_would_change_the_numbers():
    samples = _samples()
    duplicate = dict(samples[0], img_path="copy_of_s0.png")
    assert _evaluate(samples + [duplicate])["mIoU"] != pytest.approx(_evaluate(samples)["mIoU"])
