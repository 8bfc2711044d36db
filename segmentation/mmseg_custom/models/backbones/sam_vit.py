"""SAM ViT image encoder without its neck (the adapter's main branch).

Same architecture and parameter names as segment-anything's ``ImageEncoderViT``
(patch embedding, absolute position embedding, pre-norm blocks with windowed or
global attention and decomposed relative positions, MLP), with the interface the
adapter needs: the patch embedding returns flattened NHWC tokens, blocks take and
return tokens ``(B, N, C)`` together with the grid size, the absolute position
embedding is resized bicubically to the input grid and the relative-position tables
are resized linearly when the grid differs from the pre-training one. Blocks can be
gradient-checkpointed (``use_reentrant=False``).

State-dict keys (top level, as in the converted SAM checkpoint): ``pos_embed``,
``patch_embed.proj.*``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,attn.rel_pos_h,
attn.rel_pos_w,norm2,mlp.lin1,mlp.lin2}.*``.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

__all__ = ["SAMImageEncoder", "SAMBlock", "RelPosAttention", "PatchEmbed", "MLPBlock",
           "window_partition", "window_unpartition", "get_rel_pos", "add_decomposed_rel_pos"]


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: ``proj`` = Conv2d(in_chans, embed_dim, p, stride p)."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
        """(B, in_chans, H, W) -> tokens (B, h*w, C) in row-major NHWC order, h, w."""
        x = self.proj(x)
        _, _, h, w = x.shape
        return x.permute(0, 2, 3, 1).flatten(1, 2), h, w


class MLPBlock(nn.Module):
    """``lin1`` -> GELU (exact) -> ``lin2``."""

    def __init__(self, embedding_dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


def window_partition(x: torch.Tensor, window_size: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Split (B, H, W, C) into (B * nWin, ws, ws, C) windows.

    The map is padded at the bottom/right with zeros to a multiple of ``window_size``;
    the padded tokens are not masked later (SAM behaviour, quirk Q33). Returns the
    windows and the padded size (Hp, Wp).
    """
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, c)
    return windows, (hp, wp)


def window_unpartition(windows: torch.Tensor, window_size: int, pad_hw: Tuple[int, int],
                       hw: Tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nWin, ws, ws, C) -> (B, H, W, C), padding cropped."""
    hp, wp = pad_hw
    h, w = hw
    b = windows.shape[0] // (hp * wp // window_size // window_size)
    x = windows.view(b, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, hp, wp, -1)
    if hp > h or wp > w:
        x = x[:, :h, :w, :].contiguous()
    return x


@lru_cache(maxsize=64)
def _relative_index(q_size: int, k_size: int, device: torch.device) -> torch.Tensor:
    """Cached (q_size, k_size) int64 table: row of the rel-pos table for each (query, key).

    index[i, j] = i * max(k/q, 1) - j * max(q/k, 1) + (k - 1) * max(q/k, 1), truncated
    to an integer (computed in float32 as SAM does). Built once per (sizes, device).
    """
    with torch.inference_mode(False), torch.no_grad():  # a plain tensor, whatever the caller's mode
        q_coords = torch.arange(q_size, device=device)[:, None] * max(k_size / q_size, 1.0)
        k_coords = torch.arange(k_size, device=device)[None, :] * max(q_size / k_size, 1.0)
        relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
        return relative.long()


def resize_rel_pos(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """Linearly resize a (L, C) rel-pos table to (length, C) (align_corners False); no-op if equal."""
    if rel_pos.shape[0] == length:
        return rel_pos
    resized = F.interpolate(rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1),
                            size=length, mode="linear")
    return resized.reshape(-1, length).permute(1, 0)


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative-position embeddings (q_size, k_size, C) for one axis."""
    table = resize_rel_pos(rel_pos, int(2 * max(q_size, k_size) - 1))
    return table[_relative_index(q_size, k_size, table.device)]


def decomposed_rel_pos(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                       q_size: Tuple[int, int], k_size: Tuple[int, int]
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The two decomposed (MViTv2) terms for queries q (B', q_h * q_w, C) (unscaled).

    Returns rel_h (B', q_h, q_w, k_h) and rel_w (B', q_h, q_w, k_w) with
    rel_h[b, y, x, ky] = <q[b, y, x], Rh[y, ky]>, rel_w[b, y, x, kx] = <q[b, y, x], Rw[x, kx]>.
    """
    q_h, q_w = q_size
    k_h, k_w = k_size
    rh = get_rel_pos(q_h, k_h, rel_pos_h)
    rw = get_rel_pos(q_w, k_w, rel_pos_w)
    b, _, dim = q.shape
    r_q = q.reshape(b, q_h, q_w, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)
    return rel_h, rel_w


def add_decomposed_rel_pos(attn: torch.Tensor, q: torch.Tensor, rel_pos_h: torch.Tensor,
                           rel_pos_w: torch.Tensor, q_size: Tuple[int, int],
                           k_size: Tuple[int, int]) -> torch.Tensor:
    """attn (B', q_h*q_w, k_h*k_w) + rel_h[..., :, None] + rel_w[..., None, :] (same shape)."""
    q_h, q_w = q_size
    k_h, k_w = k_size
    rel_h, rel_w = decomposed_rel_pos(q, rel_pos_h, rel_pos_w, q_size, k_size)
    b = q.shape[0]
    attn = attn.view(b, q_h, q_w, k_h, k_w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return attn.view(b, q_h * q_w, k_h * k_w)


class RelPosAttention(nn.Module):
    """Multi-head self-attention over an (h, w) grid with decomposed relative positions.

    Args:
        dim: channels C. num_heads: heads (head_dim = C // num_heads, scale head_dim^-0.5).
        qkv_bias: bias of ``qkv``.
        use_rel_pos: create ``rel_pos_h`` / ``rel_pos_w`` of shape (2 * s - 1, head_dim).
        rel_pos_zero_init: zero tables (SAM); otherwise trunc_normal(std 0.02).
        input_size: grid (s_h, s_w) the tables are built for (pre-training size).
        use_sdpa: compute softmax(qk^T * scale + bias) v with
            ``F.scaled_dot_product_attention`` (rel-pos bias as float ``attn_mask``).
            Default False: plain matmul-softmax attention, numerically the original.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True,
                 use_rel_pos: bool = False, rel_pos_zero_init: bool = True,
                 input_size: Optional[Tuple[int, int]] = None, use_sdpa: bool = False) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.use_sdpa = use_sdpa
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("input_size is required when use_rel_pos=True")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))
            if not rel_pos_zero_init:
                nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
                nn.init.trunc_normal_(self.rel_pos_w, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h, w, C) -> (B, h, w, C), attention over all h*w positions of each item."""
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.num_heads, h * w, -1).unbind(0)
        if self.use_sdpa:
            bias = None
            if self.use_rel_pos:
                rel_h, rel_w = decomposed_rel_pos(q, self.rel_pos_h, self.rel_pos_w, (h, w), (h, w))
                bias = (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(
                    b * self.num_heads, h * w, h * w)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if self.use_rel_pos:
                attn = add_decomposed_rel_pos(attn, q, self.rel_pos_h, self.rel_pos_w, (h, w), (h, w))
            out = attn.softmax(dim=-1) @ v
        out = out.view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(out)


class SAMBlock(nn.Module):
    """Pre-norm transformer block (no drop path, no layer scale), on flattened tokens.

    ``x = x + attn(norm1(x))`` (windowed when ``window_size`` > 0, global otherwise),
    ``x = x + mlp(norm2(x))``; LayerNorms with eps 1e-6.

    Args:
        window_size: 0 = global attention over the whole grid; > 0 = attention inside
            non-overlapping windows (zero-padded, unmasked).
        input_size: grid the global rel-pos tables are sized for (windowed blocks use
            (window_size, window_size)).
        with_cp: gradient checkpointing (``use_reentrant=False``) when the input
            requires grad.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 use_rel_pos: bool = False, rel_pos_zero_init: bool = True, window_size: int = 0,
                 input_size: Optional[Tuple[int, int]] = None, with_cp: bool = False,
                 use_sdpa: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RelPosAttention(
            dim, num_heads=num_heads, qkv_bias=qkv_bias, use_rel_pos=use_rel_pos,
            rel_pos_zero_init=rel_pos_zero_init,
            input_size=input_size if window_size == 0 else (window_size, window_size),
            use_sdpa=use_sdpa)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))
        self.window_size = window_size
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """Tokens (B, H*W, C) of an H x W grid -> (B, H*W, C)."""
        if x.dim() != 3 or x.shape[1] != H * W:
            raise ValueError(f"SAMBlock expects tokens (B, H*W={H * W}, C), got {tuple(x.shape)}")
        if self.with_cp and x.requires_grad:
            return checkpoint(self._forward, x, H, W, use_reentrant=False)
        return self._forward(x, H, W)

    def _forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        b, n, c = x.shape
        x = x.reshape(b, H, W, c)
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            x, pad_hw = window_partition(x, self.window_size)
        x = self.attn(x)
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw, (H, W))
        x = shortcut + x
        x = x + self.mlp(self.norm2(x))
        return x.reshape(b, n, c)


class SAMImageEncoder(nn.Module):
    """SAM ViT image encoder without the neck.

    Args:
        img_size: crop size of the network; kept for the adapter (sizes nothing here).
        patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio, qkv_bias: ViT shape.
        use_abs_pos: learnable ``pos_embed`` (1, P, P, C), P = pretrained_size // patch_size,
            zero-initialised, bicubically resized (align_corners False) to the input grid.
        use_rel_pos, rel_pos_zero_init: decomposed relative positions in every block.
        window_size: window of the windowed blocks (tables 2 * window_size - 1 rows).
        global_attn_indexes: blocks with global attention (tables 2 * P - 1 rows,
            linearly resized when the input grid is not P x P).
        pretrained_size: image size of the SAM pre-training (1024); sizes ``pos_embed`` and
            the global rel-pos tables.
        with_cp: gradient checkpointing of every block when its input requires grad.
        use_sdpa: use ``F.scaled_dot_product_attention`` in every block (faster, same maths;
            default False = plain attention, numerically the original).

    ViT-B: embed_dim 768, depth 12, heads 12, global (2, 5, 8, 11); ViT-L: 1024, 24, 16,
    (5, 11, 17, 23); ViT-H: 1280, 32, 16, (7, 15, 23, 31).
    """

    def __init__(self, img_size: int = 1024, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, use_abs_pos: bool = True,
                 use_rel_pos: bool = True, rel_pos_zero_init: bool = True, window_size: int = 14,
                 global_attn_indexes: Sequence[int] = (2, 5, 8, 11), pretrained_size: int = 1024,
                 with_cp: bool = False, use_sdpa: bool = False) -> None:
        super().__init__()
        bad = [i for i in global_attn_indexes if not 0 <= i < depth]
        if bad:
            raise ValueError(f"global_attn_indexes {list(global_attn_indexes)} out of range for "
                             f"depth {depth}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.pretrained_size = pretrained_size
        self.global_attn_indexes = tuple(global_attn_indexes)
        self.with_cp = with_cp
        grid = pretrained_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed: Optional[nn.Parameter] = None
        if use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            SAMBlock(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                     use_rel_pos=use_rel_pos, rel_pos_zero_init=rel_pos_zero_init,
                     window_size=0 if i in self.global_attn_indexes else window_size,
                     input_size=(grid, grid), with_cp=with_cp, use_sdpa=use_sdpa)
            for i in range(depth))

    def resized_pos_embed(self, h: int, w: int) -> torch.Tensor:
        """``pos_embed`` bicubically resized to an h x w grid, as tokens (1, h*w, C)."""
        pos = F.interpolate(self.pos_embed.permute(0, 3, 1, 2), size=(h, w), mode="bicubic",
                            align_corners=False)
        return pos.reshape(1, -1, h * w).permute(0, 2, 1)

    def embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
        """Image (B, in_chans, H, W) -> tokens (B, H16*W16, C) with position embedding, H16, W16."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"SAMImageEncoder expects images (B, {self.in_chans}, H, W), got "
                             f"{tuple(x.shape)}")
        x, h, w = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.resized_pos_embed(h, w)
        return x, h, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, in_chans, H, W) -> features before the SAM neck (B, C, H16, W16)."""
        x, h, w = self.embed(x)
        for blk in self.blocks:
            x = blk(x, h, w)
        return x.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
