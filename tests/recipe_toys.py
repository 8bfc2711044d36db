"""Toy model, data and hooks for the recipe tests (a real mmengine Runner, tiny work)."""
from __future__ import annotations

import uuid
from typing import Any

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner


class ToyModel(BaseModel):
    """loss = sum_i w_i * x over three parameters named like segmentor parameters
    (ids 0, 1 and 2 for one ViT block), so each sits in its own layer-decay group."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.patch_embed = nn.Module()
        self.backbone.patch_embed.weight = nn.Parameter(torch.zeros(2, 1))
        self.backbone.blocks = nn.ModuleList([nn.Module()])
        self.backbone.blocks[0].weight = nn.Parameter(torch.zeros(2, 1))
        self.decode_head = nn.Module()
        self.decode_head.weight = nn.Parameter(torch.zeros(2, 1))

    def forward(self, inputs: list[torch.Tensor], data_samples: Any = None,
                mode: str = "tensor") -> Any:
        x = torch.stack(inputs).sum()
        total = (self.backbone.patch_embed.weight.sum() + self.backbone.blocks[0].weight.sum()
                 + self.decode_head.weight.sum())
        out = total * x
        return dict(loss=out) if mode == "loss" else out


class ToyData(torch.utils.data.Dataset):
    """Sample i is the scalar i + 1."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return dict(inputs=torch.tensor([float(i + 1)]))


class Recorder(Hook):
    """Per global iteration: the lr of every group before the step, and the parameters after it."""

    priority = "LOWEST"

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []
        self.epochs: list[int] = []
        self.params: list[torch.Tensor] = []

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        assert runner.iter == len(self.lrs)
        self.lrs.append([g["lr"] for g in runner.optim_wrapper.optimizer.param_groups])
        self.epochs.append(runner.epoch)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.params.append(runner.model.decode_head.weight.detach().clone())


def run_toy(tmp_path, n: int, max_epochs: int, optim_wrapper: dict,
            param_scheduler: Any = None) -> Recorder:
    """Train the toy model for ``max_epochs`` epochs of ``n`` iterations; return the recorder."""
    recorder = Recorder()
    runner = Runner(
        model=ToyModel(), work_dir=str(tmp_path), experiment_name=f"recipe_{uuid.uuid4().hex}",
        train_dataloader=dict(dataset=ToyData(n), batch_size=1, num_workers=0,
                              sampler=dict(type="DefaultSampler", shuffle=False)),
        optim_wrapper=optim_wrapper, param_scheduler=param_scheduler,
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=None, logger=dict(type="LoggerHook", interval=1000)),
        custom_hooks=[recorder], default_scope="mmseg")
    runner.train()
    return recorder
