"""Building blocks of the RoadFormer2-style fusion neck (spec model.md §4.2).

Parameter names and initialisations match the original neck so that released
checkpoints load with strict=True. All blocks take and return NCHW tensors.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class BiasedLayerNorm(nn.Module):
    """LayerNorm over the last axis with the original's formula:
    ``(x - mean) / sqrt(var_biased + 1e-5) * weight + bias``.

    Args:
        dim: size of the normalised (last) axis.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., dim) -> (..., dim)."""
        mu = x.mean(-1, keepdim=True)
        sigma = x.var(-1, keepdim=True, unbiased=False)
        return (x - mu) / torch.sqrt(sigma + 1e-5) * self.weight + self.bias


class ChannelLayerNorm(nn.Module):
    """Channel LayerNorm of an NCHW map, computed on the (B, H*W, C) token view.

    Parameters live in ``body`` (keys ``body.weight``, ``body.bias``).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = BiasedLayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, HW, C) view
        return self.body(tokens).transpose(1, 2).reshape(b, c, h, w)


class AttentionBase(nn.Module):
    """Restormer-style channel ("transposed") attention with grouped qkv convs.

    Returns ``y + scale2 * proj(attention(y))`` for input y (KEEP Q24: the residual
    is the block's own input, which in GFE is the *normalised* feature).

    Args:
        dim: channels d; must be divisible by ``num_heads`` and ``groups``.
        num_heads: heads; each attends over d / num_heads channels.
        groups: groups of both qkv convolutions (grouped, not depthwise).
    """

    def __init__(self, dim: int, num_heads: int = 8, groups: int = 32) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.scale2 = nn.Parameter(torch.tensor(1.0))
        self.qkv1 = nn.Conv2d(dim, dim * 3, kernel_size=1, groups=groups, bias=False)
        self.qkv2 = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=groups,
                              bias=False)
        self.proj = nn.Conv2d(dim, dim, kernel_size=1, bias=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """y: (B, d, H, W) -> (B, d, H, W)."""
        b, c, h, w = y.shape
        q, k, v = self.qkv2(self.qkv1(y)).chunk(3, dim=1)
        # (B, d, H, W) -> (B, heads, d/heads, H*W)
        q = q.reshape(b, self.num_heads, c // self.num_heads, h * w)
        k = k.reshape(b, self.num_heads, c // self.num_heads, h * w)
        v = v.reshape(b, self.num_heads, c // self.num_heads, h * w)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out = (attn @ v).reshape(b, c, h, w)
        return y + self.proj(out) * self.scale2


class GFE(nn.Module):
    """Global feature encoder of one modality: ``x + AttentionBase(LN(x))``.

    The original's ``ffn_expansion_factor`` is unused there (no FFN) and is not taken.
    """

    def __init__(self, dim: int, num_heads: int = 8, groups: int = 32) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.attn = AttentionBase(dim, num_heads=num_heads, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, d, H, W) -> (B, d, H, W)."""
        return x + self.attn(self.norm1(x))


class MobileNetV2(nn.Module):
    """Local feature encoder: inverted residual ``bottleneck(x) * scale + x``.

    ``bottleneckBlock`` = 1x1 (d -> 2d) / ReLU6 / depthwise 3x3 / ReLU6 / 1x1 (2d -> d),
    no biases; ``scale`` starts at 0 (KEEP Q23: the branch starts as the identity).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        hidden = in_channels * 2
        self.bottleneckBlock = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
        )
        self.scale = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, d, H, W) -> (B, d, H, W)."""
        return self.bottleneckBlock(x) * self.scale + x


class Scale(nn.Module):
    """A learnable scalar factor ``x * scale``."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class GFFM(nn.Module):
    """Cross-modal channel attention with a fixed-size spatial LayerNorm.

    Input [x | y] (d channels each): ``out_x = gammax * softmax(x y^T) y + x``,
    ``out_y = gammay * softmax(y x^T) x + y`` (energies unscaled, KEEP Q24), then
    ``norm`` = nn.LayerNorm(H*W) over the spatial axis of the (B, 2d, H*W) concat.
    The LayerNorm length fixes the input size (KEEP Q17): any other size raises.

    Args:
        feat_size: (H, W) this level must have.
        img_size: the backbone input size the level derives from (for error messages).
    """

    def __init__(self, feat_size: tuple[int, int], img_size: int) -> None:
        super().__init__()
        self.feat_size = (int(feat_size[0]), int(feat_size[1]))
        self.img_size = img_size
        self.gammax = Scale(0.0)
        self.gammay = Scale(0.0)
        self.norm = nn.LayerNorm(self.feat_size[0] * self.feat_size[1])

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """feat: (B, 2d, H, W) with (H, W) == feat_size -> (B, 2d, H, W)."""
        b, c2, h, w = feat.shape
        if (h, w) != self.feat_size:
            eh, ew = self.feat_size
            raise ValueError(
                f"GFFM (fusion neck) expects a {eh}x{ew} feature map but received {h}x{w}: "
                f"its spatial LayerNorm has a fixed length {eh * ew} built from the backbone "
                f"setting img_size={self.img_size}, so the network only runs on "
                f"{self.img_size}x{self.img_size} inputs (quirk Q17). Resize, pad or slide the "
                f"input to {self.img_size}x{self.img_size}, or build the model with a matching "
                f"img_size.")
        d = c2 // 2
        x, y = torch.split(feat, (d, d), dim=1)
        x = x.reshape(b, d, h * w)
        y = y.reshape(b, d, h * w)
        att_x = torch.bmm(x, y.transpose(1, 2)).softmax(dim=-1)
        att_y = torch.bmm(y, x.transpose(1, 2)).softmax(dim=-1)
        out_x = self.gammax(torch.bmm(att_x, y)) + x
        out_y = self.gammay(torch.bmm(att_y, x)) + y
        out = self.norm(torch.cat((out_x, out_y), dim=1))
        return out.reshape(b, c2, h, w)


class DetailMlp(nn.Module):
    """Gated depthwise MLP ("detail feature extraction"), expansion 1, no biases.

    ``project_in`` (C -> 2C) / ``dwconv`` 3x3 with C groups (2 channels per group) /
    ``GELU(first half) * second half`` / ``project_out`` (C -> C).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.project_in = nn.Conv2d(channels, channels * 2, kernel_size=1, bias=False)
        self.dwconv = nn.Conv2d(channels * 2, channels * 2, kernel_size=3, padding=1,
                                groups=channels, bias=False)
        self.project_out = nn.Conv2d(channels, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class ConvGNReLU(nn.Module):
    """1x1 Conv (no bias) -> GroupNorm -> ReLU, named like mmcv's ConvModule
    (``conv``, ``gn``); conv kaiming-normal (fan_out, relu), GN 1/0."""

    def __init__(self, channels: int, num_groups: int = 32) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.gn = nn.GroupNorm(num_groups, channels)
        self.activate = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.gn(self.conv(x)))


class FFRM(nn.Module):
    """Fused feature recalibration: ``x + x * sigmoid(conv_atten(avgpool(x)))``."""

    def __init__(self, channels: int, num_groups: int = 32) -> None:
        super().__init__()
        self.conv_atten = ConvGNReLU(channels, num_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        atten = torch.sigmoid(self.conv_atten(F.avg_pool2d(x, x.shape[2:])))
        return x + x * atten


class Scale2(nn.Module):
    """Learned sum ``g * scale1 + l * scale2`` (both scalars start at 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale1 = nn.Parameter(torch.tensor(1.0))
        self.scale2 = nn.Parameter(torch.tensor(1.0))

    def forward(self, g: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
        return g * self.scale1 + l * self.scale2


class HSwish(nn.Module):
    """``x * ReLU6(x + 3) / 6``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (F.relu6(x + 3) / 6)


class CoordinateAttention(nn.Module):
    """Coordinate attention (Hou et al. 2021): ``x * a_w * a_h``.

    ``bn1`` is a plain BatchNorm2d (KEEP Q19: the original's SyncBatchNorm; the runner
    converts it under DDP, keys are identical).

    Args:
        channels: C (in = out).
        reduction: mip = max(8, C // reduction).
    """

    def __init__(self, channels: int, reduction: int = 32) -> None:
        super().__init__()
        mip = max(8, channels // reduction)
        self.conv1 = nn.Conv2d(channels, mip, kernel_size=1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = HSwish()
        self.conv_h = nn.Conv2d(mip, channels, kernel_size=1)
        self.conv_w = nn.Conv2d(mip, channels, kernel_size=1)
        for conv in (self.conv1, self.conv_h, self.conv_w):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W); H != W allowed."""
        h, w = x.shape[2:]
        x_h = F.adaptive_avg_pool2d(x, (None, 1))                     # (B, C, H, 1)
        x_w = F.adaptive_avg_pool2d(x, (1, None)).permute(0, 1, 3, 2)  # (B, C, W, 1)
        y = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        a_h = self.conv_h(y_h).sigmoid()                     # (B, C, H, 1)
        a_w = self.conv_w(y_w.permute(0, 1, 3, 2)).sigmoid()  # (B, C, 1, W)
        return x * a_w * a_h


class CA(nn.Module):
    """Coordinate-attention residual ``x + coord_atten(x)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.coord_atten = CoordinateAttention(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.coord_atten(x)
