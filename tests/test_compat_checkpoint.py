"""Checkpoints load with weights_only=True; unknown pickled classes are refused clearly."""
import collections

import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub

import mmseg_custom  # noqa: F401  (installs the safe loader)
from conftest import run_python
from mmengine.runner.checkpoint import CheckpointLoader, save_checkpoint
from mmseg_custom.compat import UnsafeCheckpointError


class NotAllowed:
    """A class no allow-list knows."""


def _mmengine_style_checkpoint(path):
    hub = MessageHub.get_instance("ckpt_test")
    for i in range(3):
        hub.update_scalar("train/loss", 1.0 / (i + 1))
    hub.update_info("iter", 3)
    state = dict(
        meta=dict(seed=np.int64(7), epoch=1, iter=3, dataset_meta=dict(classes=("a", "b")),
                  stats=np.arange(4, dtype=np.float32)),
        state_dict=collections.OrderedDict(w=torch.ones(2)),
        message_hub=hub.state_dict(),
        optimizer=torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1).state_dict())
    save_checkpoint(state, str(path))


def test_plain_weights_only_load_refuses_mmengine_checkpoint(tmp_path):
    path = tmp_path / "epoch_1.pth"
    _mmengine_style_checkpoint(path)
    result = run_python(f"import torch; torch.load({str(path)!r}, weights_only=True)")
    assert result.returncode != 0
    assert "weights_only" in result.stderr.lower() or "unsupported global" in result.stderr.lower()


def test_mmengine_checkpoint_loads_weights_only(tmp_path):
    path = tmp_path / "epoch_1.pth"
    _mmengine_style_checkpoint(path)
    ckpt = CheckpointLoader.load_checkpoint(str(path), map_location="cpu")
    assert torch.equal(ckpt["state_dict"]["w"], torch.ones(2))
    assert ckpt["meta"]["seed"] == 7
    hub = MessageHub.get_instance("ckpt_reload")
    hub.load_state_dict(ckpt["message_hub"])
    assert hub.get_scalar("train/loss").current() == pytest.approx(1.0 / 3)


def test_unknown_class_is_refused_with_clear_message(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save(dict(state_dict=dict(w=torch.ones(1)), meta=NotAllowed()), path)
    with pytest.raises(UnsafeCheckpointError) as err:
        CheckpointLoader.load_checkpoint(str(path), map_location="cpu")
    message = str(err.value)
    assert str(path) in message
    assert "NotAllowed" in message
    assert "convert_released_checkpoint" in message and "allow_checkpoint_classes" in message


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        CheckpointLoader.load_checkpoint(str(tmp_path / "nope.pth"))


def test_interrupted_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    import mmengine.runner.runner as mm_runner

    path = tmp_path / "epoch_1.pth"
    mm_runner.save_checkpoint(dict(state_dict=dict(w=torch.zeros(3))), str(path))
    assert mm_runner.save_checkpoint.__name__ == "atomic_save_checkpoint"

    def interrupted(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mm_runner.save_checkpoint(dict(state_dict=dict(w=torch.ones(3))), str(path))
    monkeypatch.undo()
    ckpt = CheckpointLoader.load_checkpoint(str(path), map_location="cpu")
    assert torch.equal(ckpt["state_dict"]["w"], torch.zeros(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_1.pth"]
