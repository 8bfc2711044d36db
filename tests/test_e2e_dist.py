"""End to end on the CPU: torchrun training with 2 processes (gloo), validation,
checkpoints, resume, distributed evaluation; the demo baseline learns the synthetic data."""
import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from mmseg_custom.compat import safe_torch_load

CONFIG = REPO_ROOT / "segmentation/configs/demo/segformer_mit-b0_early-fusion_synthetic-deliver_rgb_depth.py"
# Measured with this schedule (2 ranks x batch 4, 8 epochs, seed 0; docs/benchmarks.md,
# "Demo baseline"): validation mIoU 19.6 / 31.9 / 40.5 / 52.2 after epochs 2 / 4 / 6 / 8, test
# mIoU 52.8. A model that learned nothing scores a few percent. The bound sits well below the
# measured figure (run-to-run and machine variation) and far above an untrained model.
MIN_MIOU = 30.0


def _bash(script: str, *args: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", str(REPO_ROOT / "segmentation" / script), *args],
                            capture_output=True, text=True, timeout=timeout, env=env,
                            cwd=REPO_ROOT)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


@pytest.fixture(scope="module")
def synthetic_deliver(tmp_path_factory):
    root = tmp_path_factory.mktemp("deliver")
    subprocess.run([sys.executable, str(REPO_ROOT / "segmentation/tools/make_synthetic_dataset.py"),
                    "--format", "deliver", "--out", str(root), "--num", "48", "--num-val", "16",
                    "--num-test", "15", "--seed", "0"], check=True, capture_output=True)
    return root


@pytest.mark.slow
def test_dist_train_resume_and_test(synthetic_deliver, tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PORT": "29655", "OMP_NUM_THREADS": "1"}
    work = tmp_path / "work"
    data = [f"{split}_dataloader.dataset.data_root={synthetic_deliver}"
            for split in ("train", "val", "test")]
    common = ["--work-dir", str(work), "--seed", "0", "--cfg-options", *data,
              "train_dataloader.batch_size=4", "train_dataloader.num_workers=0",
              "val_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
              "val_dataloader.persistent_workers=False", "train_cfg.val_interval=2"]
    _bash("dist_train.sh", str(CONFIG), "2", *common, "train_cfg.max_epochs=6", env=env)
    assert (work / "epoch_6.pth").is_file()
    assert list(work.glob("best_mIoU_epoch_*.pth"))
    assert (work / "last_checkpoint").read_text().strip().endswith("epoch_6.pth")

    resumed = _bash("dist_train.sh", str(CONFIG), "2", "--resume", *common,
                    "train_cfg.max_epochs=8", env=env)
    log = resumed.stdout + resumed.stderr
    assert "resumed epoch: 6" in log.lower() or "resumed epoch: 6" in log, log[-2000:]
    assert "Epoch(train)   [1]" not in log and "Epoch(train) [1]" not in log
    assert (work / "epoch_8.pth").is_file() and not (work / "epoch_6.pth").exists()

    tested = _bash("dist_test.sh", str(CONFIG), str(work / "epoch_8.pth"), "2",
                   "--work-dir", str(tmp_path / "test"), "--cfg-options", *data,
                   "test_dataloader.num_workers=0", "test_dataloader.persistent_workers=False",
                   env={**env, "PORT": "29656"})
    found = re.findall(r"\(test\).*?\bmIoU: ([0-9.]+)", tested.stdout + tested.stderr)
    assert found, (tested.stdout + tested.stderr)[-3000:]
    miou = float(found[-1])
    assert miou > MIN_MIOU
    results = list((tmp_path / "test").glob("*/*.json"))
    assert results, "test.py writes its metrics as JSON"
    assert json.loads(results[0].read_text())["mIoU"] == pytest.approx(miou, abs=0.01)

    # inference: one PNG of class indices per test image, named after the RGB stem
    out = tmp_path / "pred"
    subprocess.run([sys.executable, str(REPO_ROOT / "segmentation/tools/infer.py"), str(CONFIG),
                    str(work / "epoch_8.pth"), "--out-dir", str(out), "--overlay",
                    "--work-dir", str(tmp_path / "infer"), "--cfg-options", *data,
                    "test_dataloader.num_workers=0", "test_dataloader.persistent_workers=False"],
                   check=True, capture_output=True, timeout=300, cwd=REPO_ROOT)
    rgb = sorted(p.name for p in (synthetic_deliver / "samples/images/test").glob("*_rgb_front.png"))
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == [name.replace("_rgb_front.png", ".png") for name in rgb]
    assert len(list((out / "overlay").glob("*.png"))) == len(rgb)
    pred = cv2.imread(str(out / written[0]), cv2.IMREAD_UNCHANGED)
    assert pred.ndim == 2 and pred.dtype == np.uint8 and pred.max() < 25

    # evaluation refuses a checkpoint that does not match the model, naming the key
    ckpt = safe_torch_load(str(work / "epoch_8.pth"), map_location="cpu")  # weights_only
    ckpt["state_dict"].pop("decode_head.conv_seg.weight")
    torch.save(ckpt, tmp_path / "broken.pth")
    broken = subprocess.run([sys.executable, str(REPO_ROOT / "segmentation/tools/test.py"),
                             str(CONFIG), str(tmp_path / "broken.pth"), "--work-dir",
                             str(tmp_path / "broken"), "--cfg-options", *data],
                            capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert broken.returncode != 0
    assert "decode_head.conv_seg.weight" in broken.stderr + broken.stdout
