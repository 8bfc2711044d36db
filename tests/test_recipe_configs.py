"""The configs: every file parses; the released recipe values (configs_and_training.md §1-§5);
pipelines and datasets build and run on synthetic trees; the released models build on the
meta device with the spec's parameter counts and layer-decay grouping."""
from __future__ import annotations

import copy
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmseg_custom  # noqa: F401  (registration)
from mmseg.registry import DATASETS, MODELS, OPTIM_WRAPPER_CONSTRUCTORS, TRANSFORMS
from mmseg_custom.datasets.synthetic import make_synthetic

CONFIG_DIR = Path(__file__).resolve().parents[1] / "segmentation" / "configs"
ALL_CONFIGS = sorted(p.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.rglob("*.py"))
PRETRAINED = (CONFIG_DIR.parent / "pretrained").resolve()

# family -> (configs, backbone type, img_size, aux names, classes, batch, accumulation, test_cfg)
DELIVER_TEST = dict(mode="whole_dim", dim=(1024, 1024), rescale=True)
FMB_TEST = dict(mode="whole_dim_cut", dim=(600, 800), cut_dim=(800, 600), rescale=False)
MUSES_TEST = dict(mode="slide", crop_size=(1024, 1024), stride=(640, 640), rescale=True)
PLAIN, WITHCP = "SAMAdapterbimodalMixModNewInTwinConvNEW", "SAMAdapterbimodalMixModNewInTwinConvNEWwithcp"
RELEASED = {
    f"deliver/mm_sam_adapter_large_deliver_1024_rgb_{m}.py": (PLAIN, 1024, m, 25, 1, 4, DELIVER_TEST)
    for m in ("depth", "lidar", "event")
}
RELEASED["fmb/mm_sam_adapter_large_fmb_800_rgb_thermal.py"] = (WITHCP, 800, "infrared", 14, 2, 2,
                                                               FMB_TEST)
RELEASED.update({
    f"muses/mm_sam_adapter_large_muses_1024_rgb_{m}.py": (PLAIN, 1024, m, 19, 1, 4, MUSES_TEST)
    for m in ("lidar", "event")
})
MUSES_AUX = {"lidar": ([1.4628459, 1.8271197, 0.07808967], [7.55678107, 9.85001751, 0.67012253]),
             "event": ([0.08768561, 0.08779435, 0.0],
                       [0.4479273728078597, 0.4006636354755567, 1.0])}


def load(rel: str) -> Config:
    return Config.fromfile(str(CONFIG_DIR / rel))


@pytest.mark.parametrize("rel", ALL_CONFIGS)
def test_every_config_parses(rel):
    cfg = load(rel)
    if not rel.startswith("_base_/"):
        assert cfg.default_scope == "mmseg" and "mmseg_custom" in cfg.custom_imports.imports
        assert "model" in cfg and "train_cfg" in cfg


@pytest.mark.parametrize("rel", sorted(RELEASED))
def test_released_recipe(rel):
    btype, size, aux, classes, batch, accum, test_cfg = RELEASED[rel]
    cfg = load(rel)
    # optimisation (§2-§4)
    ow = cfg.optim_wrapper
    assert ow.type == "CumulativeOptimWrapper" and ow.get("sync_every_step", True)
    assert ow.accumulative_counts == accum and "clip_grad" not in ow
    assert ow.optimizer == dict(type="AdamW", lr=2e-4, betas=(0.9, 0.999), eps=1e-8,
                                weight_decay=0.01)
    assert ow.constructor == "LayerDecayOptimizerConstructor"
    assert ow.paramwise_cfg == dict(num_layers=24, layer_decay_rate=0.9)
    assert cfg.param_scheduler == [dict(type="PolyLRExpWarmup", power=0.9, eta_min=0.0,
                                        warmup_epochs=10, warmup_ratio=0.1, begin=0,
                                        by_epoch=True, convert_to_iter_based=True)]
    assert cfg.train_cfg == dict(type="EpochBasedTrainLoop", max_epochs=100, val_begin=1,
                                 val_interval=1)
    # runtime (§5)
    hooks = cfg.default_hooks
    assert hooks.checkpoint == dict(type="CheckpointHook", by_epoch=True, interval=1,
                                    max_keep_ckpts=1, save_best="mIoU", rule="greater")
    assert hooks.logger.type == "MainProcessLoggerHook" and hooks.logger.interval == 50
    assert cfg.log_processor.by_epoch is False
    assert [h.type for h in cfg.custom_hooks] == ["CudnnDeterminismHook", "BroadcastBNBuffersHook"]
    assert "fp16" not in cfg and "ema" not in str(cfg.custom_hooks).lower()
    assert cfg.env_cfg.cudnn_benchmark is False
    # data
    tr = cfg.train_dataloader
    assert (tr.batch_size, tr.num_workers, tr.drop_last, tr.sampler.shuffle) == (batch, 2, True, True)
    assert cfg.val_dataloader.dataset.split == "val" and tr.dataset.split == "train"
    assert cfg.val_evaluator == dict(type="MultiModalIoUMetric", nan_to_num=0)
    assert tr.dataset.modalities == ["rgb", aux]
    # model (§1)
    model = cfg.model
    bb = model.backbone
    assert (bb.type, bb.img_size, bb.modalities_name, bb.modalities_ch) == (
        btype, size, ["rgb", aux], [3, 3])
    for key, value in dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4,
                           drop_path_rate=0.3, conv_inplane=48, n_points=4,
                           deform_num_heads=16, cffn_ratio=0.25, deform_ratio=0.5,
                           init_values=1e-6, with_cp=True, window_size=14, arch="small",
                           interaction_indexes=[[0, 5], [6, 11], [12, 17], [18, 23]],
                           global_attn_indexes=[5, 11, 17, 23]).items():
        assert bb[key] == value, key
    assert Path(model.pretrained).resolve() == PRETRAINED / "sam_vit_l_image_encoder_no_neck.pth"
    assert Path(bb.checkpoint).resolve().parent == PRETRAINED
    head = model.decode_head
    assert (head.type, head.in_channels, head.channels, head.dropout_ratio, head.num_classes,
            head.align_corners, head.loss_decode.type) == (
        "SegformerHead", [1024] * 4, 512, 0.1, classes, False, "OhemCrossEntropy")
    assert model.test_cfg == test_cfg
    pre = model.data_preprocessor
    assert pre.size == (size, size) and (pre.pad_val, pre.seg_pad_val) == (0, 255)
    rgb, aux_block = pre.modalities
    assert (rgb.scale, rgb.to_rgb, rgb.mean, rgb.std) == (
        1 / 255, True, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    if rel.startswith("muses"):
        mean, std = MUSES_AUX[aux]
        assert (aux_block.scale, aux_block.to_rgb, aux_block.mean, aux_block.std) == (
            1.0, False, mean, std)
    else:
        assert (aux_block.scale, aux_block.to_rgb, aux_block.mean, aux_block.std) == (
            1 / 255, True, [0.0] * 3, [1.0] * 3)


def test_evaluation_variants_differ_only_in_the_test_set():
    for rel in sorted(CONFIG_DIR.rglob("*_easy.py")) + sorted(CONFIG_DIR.rglob("*_hard.py")):
        rel = rel.relative_to(CONFIG_DIR).as_posix()
        parent, subset = rel.rsplit("_", 1)
        child, base = load(rel).to_dict(), load(parent + ".py").to_dict()
        assert child["test_dataloader"]["dataset"].pop("subset") == subset[:-3]
        assert child == base, rel
    sub = load("muses/mm_sam_adapter_large_muses_1024_rgb_event_submission.py")
    assert sub.test_dataloader.dataset.split == "test"
    assert sub.test_dataloader.dataset.with_labels is False
    assert sub.test_evaluator.type == "PredictionWriter"
    assert sub.val_dataloader.dataset.split == "val"


def pipelines(cfg: Config) -> list[list[dict]]:
    out = []
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg.get(key)
        if loader and loader.get("dataset") and loader.dataset.get("pipeline"):
            out.append(loader.dataset.pipeline)
    return out


@pytest.mark.parametrize("rel", [r for r in ALL_CONFIGS if not r.startswith("_base_/")])
def test_pipeline_objects_build(rel):
    init_default_scope("mmseg")
    found = pipelines(load(rel))
    assert found, rel
    for pipeline in found:
        for step in pipeline:
            TRANSFORMS.build(copy.deepcopy(step))


FAMILIES = {  # config, crop, synthetic image size (the real aspect ratios)
    "deliver": ("deliver/mm_sam_adapter_large_deliver_1024_rgb_lidar.py", (1024, 1024), (64, 64)),
    "fmb": ("fmb/mm_sam_adapter_large_fmb_800_rgb_thermal.py", (800, 800), (60, 80)),
    "muses": ("muses/mm_sam_adapter_large_muses_1024_rgb_event.py", (1024, 1024), (54, 96)),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_datasets_of_the_configs_run_on_synthetic_trees(family, tmp_path):
    init_default_scope("mmseg")
    rel, crop, size = FAMILIES[family]
    cfg = load(rel)
    make_synthetic(family, str(tmp_path), (1, 1, 1), seed=0, size=size)
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        ds_cfg = copy.deepcopy(cfg[key].dataset)
        ds_cfg.data_root = str(tmp_path)
        dataset = DATASETS.build(ds_cfg)
        sample = dataset[0]
        inputs, gt = sample["inputs"], sample["data_samples"].gt_sem_seg.data
        assert inputs.dtype == torch.float32 and inputs.shape[0] == 6
        if key == "train_dataloader":  # cropped; padding to the crop is the preprocessor's
            assert inputs.shape[1] <= crop[0] and inputs.shape[2] <= crop[1]
            assert gt.shape[1:] == inputs.shape[1:]
        elif family == "deliver":  # resized to 1024, ground truth too (metrics at 1024, Q29)
            assert inputs.shape[1:] == gt.shape[1:] == (1024, 1024)
        elif family == "fmb":  # padded to 800x800 before normalisation; ground truth native
            assert inputs.shape[1:] == (800, 800) and gt.shape[1:] == size
            assert float(inputs[:, size[0]:].abs().max()) == 0.0
        else:  # native size, sliding windows at test time
            assert inputs.shape[1:] == gt.shape[1:] == size


def build_meta(cfg: Config) -> torch.nn.Module:
    init_default_scope("mmseg")
    with torch.device("meta"):
        return MODELS.build(copy.deepcopy(cfg.model))


@pytest.mark.parametrize("rel,params", [
    ("deliver/mm_sam_adapter_large_deliver_1024_rgb_lidar.py", 459_052_621),
    ("fmb/mm_sam_adapter_large_fmb_800_rgb_thermal.py", 458_979_148),
    ("muses/mm_sam_adapter_large_muses_1024_rgb_event.py", 459_052_621 - 6 * 513),
])
def test_released_models_build_on_meta(rel, params):
    model = build_meta(load(rel))
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) == 1450


def test_layer_decay_groups_of_the_released_model():
    """Group sizes from the spec's parameter counts (model.md §12.7, configs_and_training §2.1)."""
    cfg = load("deliver/mm_sam_adapter_large_deliver_1024_rgb_depth.py")
    model = build_meta(cfg)
    ow_cfg = copy.deepcopy(cfg.optim_wrapper)
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
        type=ow_cfg.pop("constructor"), paramwise_cfg=ow_cfg.pop("paramwise_cfg"),
        optim_wrapper_cfg=ow_cfg))
    wrapper = constructor(model)
    assert type(wrapper).__name__ == "CumulativeOptimWrapper"
    sizes: dict[str, int] = defaultdict(int)
    lrs = {}
    for group in wrapper.optimizer.param_groups:
        sizes[group["group_name"]] += sum(p.numel() for p in group["params"])
        lrs[group["group_name"]] = group["lr"]
        no_decay = group["group_name"].endswith("no_decay")
        assert group["weight_decay"] == (0.0 if no_decay else 0.01)
        if group["group_name"] == "layer_25_no_decay":
            fusion = [n for n in group["param_names"] if ".smart_fusion." in n]
    ids = {int(name.split("_")[1]) for name in sizes}
    assert ids == set(range(26))
    # id 0 = pos_embed + patch_embed + both ConvNeXt streams; only the patch-embed bias undecayed
    assert sizes["layer_0_decay"] == 4_194_304 + 787_456 + 98_912_064 - 1024
    assert sizes["layer_0_no_decay"] == 1024
    # ViT blocks: 302,443,520 parameters over ids 1..24
    assert sum(sizes[f"layer_{i}_{d}"] for i in range(1, 25) for d in ("decay", "no_decay")) \
        == 302_443_520
    # id 25: fc1-4, fusion neck, up, level_embed, interactions, norm1-4, decode head
    assert sizes["layer_25_decay"] + sizes["layer_25_no_decay"] == (
        2_953_216 + 25_122_164 + 4_195_328 + 3_072 + 17_269_632 + 8_192 + 3_163_673)
    fusion_total = sum(p.numel() for n, p in model.named_parameters() if ".smart_fusion." in n)
    assert fusion_total == 25_122_164 and len(fusion) == sum(
        1 for n, _ in model.named_parameters() if ".smart_fusion." in n)
    assert lrs["layer_0_decay"] == pytest.approx(2e-4 * 0.9 ** 25)
    assert lrs["layer_24_decay"] == pytest.approx(2e-4 * 0.9)
    assert lrs["layer_25_no_decay"] == pytest.approx(2e-4)
