"""CPU-only distributed runs: gloo process group, DDP without device_ids, BN vs SyncBN."""
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.config import Config

import mmseg_custom  # noqa: F401
from conftest import REPO_ROOT
from mmseg_custom.compat import configure_runtime

WORKER = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist
    import mmseg_custom
    from mmengine.model import MMDistributedDataParallel
    from mmseg_custom.compat import DeviceAwareDistributedDataParallel, init_distributed

    init_distributed("pytorch")
    rank = dist.get_rank()
    assert dist.get_backend() == "gloo"
    try:
        MMDistributedDataParallel(module=torch.nn.Linear(3, 1), device_ids=[rank])
        plain = "ok"
    except ValueError as err:
        plain = "refused"
    torch.manual_seed(0)
    model = DeviceAwareDistributedDataParallel(module=torch.nn.Linear(3, 1, bias=False),
                                               device_ids=[rank])
    x = torch.full((1, 3), float(rank + 1))
    model(x).sum().backward()
    grad = model.module.weight.grad.clone()
    with open(os.path.join(sys.argv[1], f"rank{rank}.txt"), "w") as f:
        f.write(plain + " " + " ".join(f"{v:.6f}" for v in grad.flatten().tolist()))
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_cpu_ddp_with_gloo(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only path")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_port=29631", str(script), str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = [(tmp_path / f"rank{r}.txt").read_text().split() for r in range(2)]
    # mmengine's default wrapper (device_ids on a CPU module) is refused by DDP ...
    assert outputs[0][0] == outputs[1][0] == "refused"
    # ... ours averages the gradients of both ranks: inputs 1 and 2 -> mean 1.5
    for out in outputs:
        assert [float(v) for v in out[1:]] == pytest.approx([1.5, 1.5, 1.5])


def test_configure_runtime_cpu():
    cfg = Config(dict(model=dict(type="X"), sync_bn="torch"))
    configure_runtime(cfg, "pytorch")
    if torch.cuda.is_available():
        assert cfg.sync_bn == "torch"
    else:
        assert cfg.env_cfg.dist_cfg.backend == "gloo"
        assert "sync_bn" not in cfg  # SyncBN has no CPU path: plain BN is kept
    assert cfg.model_wrapper_cfg.type == "DeviceAwareDistributedDataParallel"


def test_configure_runtime_keeps_custom_wrapper():
    cfg = Config(dict(model_wrapper_cfg=dict(type="MMFullyShardedDataParallel")))
    configure_runtime(cfg, "none")
    assert cfg.model_wrapper_cfg.type == "MMFullyShardedDataParallel"
    assert "sync_bn" not in cfg


def test_syncbn_only_under_cuda_ddp(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = Config(dict())
    configure_runtime(cfg, "pytorch")
    assert cfg.sync_bn == "torch"
    cfg = Config(dict())
    configure_runtime(cfg, "none")
    assert "sync_bn" not in cfg
