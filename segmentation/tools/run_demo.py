"""The README's main job: synthetic DeLiVER data -> train the early-fusion baseline on
the CPU -> evaluate the best checkpoint on the synthetic test split.

``python segmentation/tools/run_demo.py [--data-dir segmentation/data/demo_deliver] [--work-dir work_dirs/demo]``
Each step is one of the project's own entry points, run as a subprocess.
"""
from __future__ import annotations

import argparse
import glob
import os
import os.path as osp
import subprocess
import sys

HERE = osp.dirname(osp.abspath(__file__))
CONFIG = osp.join(HERE, "..", "configs", "demo",
                  "segformer_mit-b0_early-fusion_synthetic-deliver_rgb_depth.py")


def _run(args: list[str]) -> None:
    subprocess.run([sys.executable, *args], check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=osp.join(osp.dirname(HERE), "data", "demo_deliver"))
    parser.add_argument("--work-dir", default="work_dirs/demo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if not osp.isdir(osp.join(args.data_dir, "samples")):
        _run([osp.join(HERE, "make_synthetic_dataset.py"), "--format", "deliver",
              "--out", args.data_dir, "--num", "48", "--num-val", "16", "--num-test", "24",
              "--seed", str(args.seed)])
    data_opt = ["--cfg-options", f"train_dataloader.dataset.data_root={args.data_dir}",
                f"val_dataloader.dataset.data_root={args.data_dir}",
                f"test_dataloader.dataset.data_root={args.data_dir}"]
    _run([osp.join(HERE, "train.py"), CONFIG, "--work-dir", args.work_dir,
          "--seed", str(args.seed), *data_opt])
    best = sorted(glob.glob(osp.join(args.work_dir, "best_mIoU*.pth")), key=os.path.getmtime)
    if not best:
        raise FileNotFoundError(f"no best_mIoU checkpoint in {args.work_dir}")
    _run([osp.join(HERE, "test.py"), CONFIG, best[-1],
          "--work-dir", osp.join(args.work_dir, "test"), *data_opt])


if __name__ == "__main__":
    main(sys.argv[1:])
