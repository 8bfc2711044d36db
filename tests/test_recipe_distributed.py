"""Two CPU processes (gloo DDP) through mmengine's Runner: gradients all-reduced at every
micro-step of an accumulation window (Q31) and validation on rank 0's BatchNorm statistics."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import REPO_ROOT

WORKER = textwrap.dedent("""
    import gc, json, os, sys, uuid
    import torch, torch.nn as nn, torch.distributed as dist
    import mmseg_custom
    from mmengine.config import Config
    from mmengine.evaluator import BaseMetric
    from mmengine.hooks import Hook
    from mmengine.model import BaseModel
    from mmengine.runner import Runner
    from mmseg.registry import METRICS
    from mmseg_custom.compat import configure_runtime, init_distributed

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 1)
            self.bn = nn.BatchNorm2d(2)

        def forward(self, inputs, data_samples=None, mode="tensor"):
            y = self.bn(self.conv(torch.stack(inputs)))
            return dict(loss=y.square().mean() + y.mean()) if mode == "loss" else [y.mean()]

    class Data(torch.utils.data.Dataset):  # sample i: a 2x2 map of value (i + 1)^2
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return dict(inputs=torch.full((1, 2, 2), float((i + 1) ** 2)))

    @METRICS.register_module()
    class Count(BaseMetric):
        def process(self, data_batch, data_samples):
            self.results.append(1)

        def compute_metrics(self, results):
            return dict(mIoU=float(len(results)))

    class BeforeBroadcast(Hook):
        priority = "HIGH"  # before BroadcastBNBuffersHook (NORMAL)

        def before_val_epoch(self, runner):
            self.local = runner.model.module.bn.running_mean.tolist()

    init_distributed("pytorch")
    rank = dist.get_rank()
    out = {}
    for sync in (True, False):
        recorder = BeforeBroadcast()
        torch.manual_seed(0)
        cfg = Config(dict(
            model=Toy(), work_dir=sys.argv[1], experiment_name=f"dist_{uuid.uuid4().hex}",
            launcher="pytorch", default_scope="mmseg",
            train_dataloader=dict(dataset=Data(), batch_size=1, num_workers=0,
                                  sampler=dict(type="DefaultSampler", shuffle=False)),
            val_dataloader=dict(dataset=Data(), batch_size=1, num_workers=0,
                                sampler=dict(type="DefaultSampler", shuffle=False)),
            val_evaluator=dict(type="Count"), val_cfg=dict(type="ValLoop"),
            train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=2),
            optim_wrapper=dict(type="CumulativeOptimWrapper", accumulative_counts=3,
                               sync_every_step=sync,
                               optimizer=dict(type="SGD", lr=0.1, momentum=0.0)),
            default_hooks=dict(checkpoint=None, logger=dict(type="LoggerHook", interval=100)),
            custom_hooks=[dict(type="BroadcastBNBuffersHook"), recorder]))
        configure_runtime(cfg, "pytorch")
        wrapper = cfg.pop("model_wrapper_cfg")  # the Runner reads it from its cfg argument
        runner = Runner(**cfg, cfg=Config(dict(model_wrapper_cfg=wrapper)))
        calls = [0]

        def counting_allreduce(state, bucket):
            calls[0] += 1
            grad = bucket.buffer().div_(dist.get_world_size())
            return dist.all_reduce(grad, async_op=True).get_future().then(lambda f: f.value()[0])

        runner.model.register_comm_hook(None, counting_allreduce)
        runner.train()
        module = runner.model.module
        out[str(sync)] = dict(
            allreduces=calls[0], weight=module.conv.weight.flatten().tolist(),
            bn_local=recorder.local, bn_after=module.bn.running_mean.tolist())
    with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
        json.dump(out, f)
    # free the DDP models before the process group: a reducer outliving its group can
    # abort the interpreter at exit ("terminate called without an active exception")
    del runner, module
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
""")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_ddp_accumulation_and_bn_broadcast(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU (gloo) path")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={free_port()}", str(script), str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # 3 iterations per rank and epoch, 2 epochs, windows of 3: steps after t = 2 and 5
    assert ranks[0]["True"]["allreduces"] == ranks[1]["True"]["allreduces"] == 6
    assert ranks[0]["False"]["allreduces"] == ranks[1]["False"]["allreduces"] == 2
    for mode in ("True", "False"):
        assert ranks[0][mode]["weight"] == ranks[1][mode]["weight"]  # DDP kept them equal
        # each rank trained its BatchNorm on its own samples; validation used rank 0's
        assert ranks[0][mode]["bn_local"] != pytest.approx(ranks[1][mode]["bn_local"])
        for rank in ranks:
            assert rank[mode]["bn_after"] == ranks[0][mode]["bn_local"]
    # all-reducing every micro-step or once per window: the same update up to rounding
    assert ranks[0]["True"]["weight"] == pytest.approx(ranks[0]["False"]["weight"], rel=1e-5)
