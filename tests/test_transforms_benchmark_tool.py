"""The dataloader benchmark tool runs end to end on a tiny synthetic DeLiVER tree."""
from __future__ import annotations

import os.path as osp
import sys

import pytest

TOOLS = osp.join(osp.dirname(__file__), "..", "segmentation", "tools")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for CPU time")
def test_benchmark_dataloader_smoke(tmp_path):
    sys.path.insert(0, TOOLS)
    try:
        import benchmark_dataloader as bench
    finally:
        sys.path.remove(TOOLS)
    root = str(tmp_path / "DELIVER")
    bench.make_tree(root, num=3, size=40, seed=0)
    args = bench.parse_args(["--data-root", root, "--workers", "1", "--samples", "4",
                             "--warmup", "1"])
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    init_default_scope("mmseg")
    cfg = Config.fromfile(args.config)
    result = bench.measure(bench.build_loader(cfg, root, args), args.warmup, args.samples)
    assert result["rate"] > 0 and result["cpu_ms"] > 0
    assert result["shape"][0] == 6 and max(result["shape"][1:]) <= 1024
