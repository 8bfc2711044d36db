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
    import gc, os, sys, torch, torch.distributed as dist
    import mmseg_custom
    from mmengine.model import MMDistributedDataParallel
    from mmseg_custom.compat import DeviceAwareDistributedDataParallel, init_distributed

    out_dir, wrapper = sys.argv[1], sys.argv[2]
    init_distributed("pytorch")
    rank = dist.get_rank()
    assert dist.get_backend() == "gloo"
    cls = MMDistributedDataParallel if wrapper == "mmengine" else DeviceAwareDistributedDataParallel
    torch.manual_seed(0)
    model = None
    try:
        model = cls(module=torch.nn.Linear(3, 1, bias=False), device_ids=[rank])
    except ValueError:
        result = "refused"
    else:
        model(torch.full((1, 3), float(rank + 1))).sum().backward()
        result = " ".join(f"{v:.6f}" for v in model.module.weight.grad.flatten().tolist())
    with open(os.path.join(out_dir, f"{wrapper}{rank}.txt"), "w") as f:
        f.write(result)
    del model  # free the DDP model before its process group
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
""")


def _torchrun(tmp_path, nproc: int, wrapper: str, port: int) -> list[str]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           f"--master_port={port}", str(script), str(tmp_path), wrapper]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-12000:]
    return [(tmp_path / f"{wrapper}{r}.txt").read_text() for r in range(nproc)]


@pytest.mark.slow
def test_mmengine_ddp_wrapper_refuses_cpu_module(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only path")
    # mmengine's default wrapper passes device_ids for a CPU module: DDP refuses it
    assert _torchrun(tmp_path, 1, "mmengine", 29631) == ["refused"]


@pytest.mark.slow
def test_cpu_ddp_with_gloo(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only path")
    # ours drops device_ids and averages the gradients of both ranks: inputs 1 and 2 -> 1.5
    for out in _torchrun(tmp_path, 2, "ours", 29632):
        assert [float(v) for v in out.split()] == pytest.approx([1.5, 1.5, 1.5])


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
