"""SAM ViT image encoder: parity with segment-anything, the 800 input path, SDPA, checkpointing,
SAM checkpoint conversion and loading.

segment-anything's package ``__init__`` imports torchvision (absent here), so its
``modeling`` files are loaded under a synthetic package name (``_sam_modeling``).

Parity inputs: SAM's own encoder adds ``pos_embed`` without resizing, so it only accepts
inputs of exactly its ``img_size``. To keep the true widths/depths but stay fast, the
reference encoders are built with a small ``img_size`` = 128 (8x8 token grid, the
window zero-padded to 14x14 as in Q33, global rel-pos tables of 15 rows) and ours with
the same ``pretrained_size``. The pre-trained 1024 geometry (64x64 pos-embed, 127-row
tables) at an 800 input (4x4 windows padded 50 -> 56) is tested separately against
SAM's blocks with an independent pos-embed resize.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mmseg_custom.models.backbones import sam_vit
from mmseg_custom.models.backbones.sam_vit import SAMImageEncoder
from mmseg_custom.weights.sam import (detect_sam_variant, load_sam_into_vit,
                                      load_sam_vit_weights, read_local_checkpoint)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "segmentation" / "tools"))
import convert_sam_checkpoint  # noqa: E402

VIT_L = dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23))
VIT_B = dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def sam_image_encoder():
    """segment-anything's ``modeling.image_encoder`` module, imported without torchvision."""
    spec = importlib.util.find_spec("segment_anything")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("segment-anything (test dependency) is not installed")
    modeling = Path(spec.submodule_search_locations[0]) / "modeling"
    pkg = types.ModuleType("_sam_modeling")
    pkg.__path__ = [str(modeling)]
    sys.modules["_sam_modeling"] = pkg
    mods = {}
    for name in ("common", "image_encoder"):
        mspec = importlib.util.spec_from_file_location(f"_sam_modeling.{name}",
                                                       modeling / f"{name}.py")
        mod = importlib.util.module_from_spec(mspec)
        sys.modules[mspec.name] = mod
        mspec.loader.exec_module(mod)
        mods[name] = mod
    yield mods["image_encoder"]
    for name in ("_sam_modeling", "_sam_modeling.common", "_sam_modeling.image_encoder"):
        sys.modules.pop(name, None)


def build_sam_encoder(module, img_size: int, cfg: dict, seed: int = 0):
    """SAM's ImageEncoderViT as build_sam builds it, with every zero/one init randomised."""
    torch.manual_seed(seed)
    enc = module.ImageEncoderViT(
        img_size=img_size, patch_size=16, mlp_ratio=4, qkv_bias=True, use_rel_pos=True,
        window_size=14, out_chans=256, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        embed_dim=cfg["embed_dim"], depth=cfg["depth"], num_heads=cfg["num_heads"],
        global_attn_indexes=cfg["global_attn_indexes"]).eval()
    with torch.no_grad():  # Linear/Conv weights and biases are already random (PyTorch init)
        for name, p in enc.named_parameters():
            if "pos_embed" in name or "rel_pos" in name or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return enc


def sam_reference_features(enc, x: torch.Tensor) -> torch.Tensor:
    """SAM encoder output before the neck, (B, C, H16, W16)."""
    y = enc.patch_embed(x) + enc.pos_embed
    for blk in enc.blocks:
        y = blk(y)
    return y.permute(0, 3, 1, 2)


def official_layout(enc) -> dict:
    """A state dict laid out like sam_vit_*.pth (fake prompt encoder / mask decoder keys)."""
    sd = {f"image_encoder.{k}": v for k, v in enc.state_dict().items()}
    sd["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = torch.randn(2, 128)
    sd["prompt_encoder.no_mask_embed.weight"] = torch.randn(1, 256)
    sd["mask_decoder.iou_token.weight"] = torch.randn(1, 256)
    sd["mask_decoder.output_upscaling.0.weight"] = torch.randn(256, 64, 2, 2)
    return sd


@pytest.mark.parametrize("name,cfg,img_size", [("vit_l", VIT_L, 128), ("vit_b", VIT_B, 128)])
def test_sam_parity_through_converter(sam_image_encoder, tmp_path, name, cfg, img_size):
    enc = build_sam_encoder(sam_image_encoder, img_size, cfg)
    x = torch.randn(1, 3, img_size, img_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = sam_reference_features(enc, x)
    src, dst = tmp_path / f"sam_{name}.pth", tmp_path / f"sam_{name}_no_neck.pth"
    torch.save(official_layout(enc), src)
    n_neck = sum(1 for k in enc.state_dict() if k.startswith("neck."))
    del enc

    variant = convert_sam_checkpoint.main([str(src), str(dst)])
    src.unlink()  # ViT-L files are 1.2 GB: don't leave them in pytest's kept temp dirs
    assert variant.name == name
    assert variant.embed_dim == cfg["embed_dim"] and variant.depth == cfg["depth"]
    assert variant.num_heads == cfg["num_heads"]
    assert variant.global_attn_indexes == cfg["global_attn_indexes"]
    assert variant.window_size == 14 and variant.pretrained_size == img_size
    converted = read_local_checkpoint(str(dst))
    assert not any(k.startswith(("image_encoder.", "neck.", "prompt_", "mask_")) for k in converted)
    assert len(converted) == 3 + 14 * cfg["depth"]  # pos_embed, patch_embed.proj.{w,b}, blocks
    assert n_neck == 6  # conv, LN2d, conv, LN2d
    del converted

    with torch.device("meta"):
        mine = SAMImageEncoder(img_size=img_size, pretrained_size=img_size, **cfg)
    mine.to_empty(device="cpu").eval()
    assert load_sam_into_vit(mine, str(dst)) == variant
    dst.unlink()
    with torch.no_grad():
        out = mine(x)
    assert out.shape == ref.shape == (1, cfg["embed_dim"], img_size // 16, img_size // 16)
    assert rel_err(out, ref) <= 1e-5


def test_sam_800_input_path(sam_image_encoder):
    """1024-pretrained geometry at 800x800 (and a non-square 800x608): pos-embed bicubic
    64 -> 50 (x 38), global rel-pos tables 127 -> 99 (75), windows padded 50 -> 56."""
    cfg = dict(embed_dim=64, depth=3, num_heads=4, global_attn_indexes=(1,))
    enc = build_sam_encoder(sam_image_encoder, 1024, cfg, seed=3)
    mine = SAMImageEncoder(img_size=800, pretrained_size=1024, **cfg).eval()
    load_sam_vit_weights(mine, official_layout(enc))
    assert mine.blocks[1].attn.rel_pos_h.shape == (127, 16)
    assert mine.blocks[0].attn.rel_pos_h.shape == (27, 16)
    for h, w in ((800, 800), (800, 608)):
        x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(h + w))
        with torch.no_grad():
            tok = enc.patch_embed(x)  # (1, 50, W16, C)
            pos = F.interpolate(enc.pos_embed.permute(0, 3, 1, 2), size=tok.shape[1:3],
                                mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
            ref = tok + pos
            for blk in enc.blocks:  # SAM's blocks resize the 127-row tables themselves
                ref = blk(ref)
            ref = ref.permute(0, 3, 1, 2)
            out = mine(x)
        assert out.shape == (1, 64, h // 16, w // 16)
        assert rel_err(out, ref) <= 1e-5


def reduced_vit(**kw) -> SAMImageEncoder:
    torch.manual_seed(0)
    vit = SAMImageEncoder(img_size=160, embed_dim=64, depth=4, num_heads=4, window_size=4,
                          global_attn_indexes=(1, 3), pretrained_size=128, **kw)
    with torch.no_grad():
        for name, p in vit.named_parameters():
            if "pos_embed" in name or "rel_pos" in name:
                p.normal_(0, 0.5)
    return vit


DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")])]


@pytest.mark.parametrize("device", DEVICES)
def test_sdpa_path_matches_faithful_path(device):
    ref, fast = reduced_vit().to(device), reduced_vit(use_sdpa=True).to(device)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 160, 112, device=device)  # grid 10 x 7: padded windows, resized tables
    with torch.no_grad():
        a, b = ref(x), fast(x)
    assert rel_err(b, a) <= 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_checkpointing_same_grads(device):
    plain, cp = reduced_vit().to(device), reduced_vit(with_cp=True).to(device)
    cp.load_state_dict(plain.state_dict())
    calls = {"plain": 0, "cp": 0}
    for key, model in (("plain", plain), ("cp", cp)):
        model.blocks[0].attn.register_forward_hook(
            lambda *_, key=key: calls.__setitem__(key, calls[key] + 1))
    x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(5)).to(device)
    grads = []
    for model in (plain, cp):
        xi = x.clone().requires_grad_(True)
        model(xi).square().mean().backward()
        grads.append({"input": xi.grad, **{n: p.grad for n, p in model.named_parameters()}})
    assert calls == {"plain": 1, "cp": 2}  # cp recomputes the block in backward
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        assert g is not None, name
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-7, msg=name)
    with torch.no_grad():  # no checkpointing without grad: a single forward per block
        cp(x)
    assert calls["cp"] == 3


def test_rel_pos_index_is_cached():
    vit = reduced_vit().eval()
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        vit(x)
        misses = sam_vit._relative_index.cache_info().misses
        vit(x)
    assert sam_vit._relative_index.cache_info().misses == misses
    assert sam_vit._relative_index(10, 10, torch.device("cpu")) is \
        sam_vit._relative_index(10, 10, torch.device("cpu"))


def test_rel_index_matches_definition():
    idx = sam_vit._relative_index(5, 5, torch.device("cpu"))
    i, j = torch.meshgrid(torch.arange(5), torch.arange(5), indexing="ij")
    assert torch.equal(idx, i - j + 4)


def test_wrong_sam_size_fails_clearly():
    with torch.device("meta"):
        vit_b_weights = SAMImageEncoder(**VIT_B).state_dict()
        vit_l = SAMImageEncoder(**VIT_L)
    with pytest.raises(ValueError, match=r"'pos_embed' has shape \(1, 64, 64, 768\).*"
                                         r"expects \(1, 64, 64, 1024\).*vit_b"):
        load_sam_vit_weights(vit_l, vit_b_weights, source="sam_vit_b.pth")
    # same width, other depth: the missing block is named
    with torch.device("meta"):
        shallow = {k: v for k, v in SAMImageEncoder(**VIT_L).state_dict().items()
                   if not k.startswith("blocks.23.")}
    with pytest.raises(ValueError, match=r"missing ViT key 'blocks\.23\.norm1\.weight'"):
        load_sam_vit_weights(vit_l, shallow)


def test_detect_variant_vit_h():
    with torch.device("meta"):
        sd = SAMImageEncoder(embed_dim=1280, depth=32, num_heads=16,
                             global_attn_indexes=(7, 15, 23, 31)).state_dict()
    v = detect_sam_variant(sd)
    assert (v.name, v.num_heads, v.global_attn_indexes) == ("vit_h", 16, (7, 15, 23, 31))
    assert v.encoder_kwargs()["pretrained_size"] == 1024


def test_bad_sam_files(tmp_path):
    with pytest.raises(ValueError, match="URL"):
        read_local_checkpoint("https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth")
    with pytest.raises(FileNotFoundError):
        read_local_checkpoint(str(tmp_path / "missing.pth"))
    torch.save({"model.layer.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not an official SAM checkpoint"):
        convert_sam_checkpoint.main([str(tmp_path / "other.pth"), str(tmp_path / "o.pth")])
