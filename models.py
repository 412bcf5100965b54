"""The two noise predictors of the series, shared by notebooks 2 and 3, the checkpoint
training script and the benchmark.

* `MLPDenoiser` (notebook 2): flattened 784-pixel digit + time embedding -> predicted noise.
* `UNet` (notebook 3): the DDPM U-Net (Ho et al. 2020, Appendix B) scaled to 28x28 grey digits:
  residual blocks with GroupNorm/SiLU, the time embedding added in every block, skip
  connections at 28 -> 14 -> 7, optional self-attention, dropout.

Both are called as model(x_t, t) with x_t (B, 1, 28, 28) and integer t (B,) in [0, T-1],
and return the predicted noise with the shape of x_t. `build_model(config)` makes either
from a config dict (the dict stored in checkpoints).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer position encoding of Vaswani et al. 2017, used by DDPM for the timestep.

    emb[:, i] = sin(t * w_i), emb[:, half + i] = cos(t * w_i), w_i = exp(-ln(max_period) i / half).
    The frequencies are formed in log space (never 10000 ** (i / half)), which stays accurate in
    low precision. t: (B,) -> (B, dim), every entry in [-1, 1].
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"dim must be an even int >= 2, got {dim}")
    half = dim // 2
    exponents = torch.arange(half, device=t.device, dtype=torch.float32) / half  # (half,)
    freqs = torch.exp(-math.log(max_period) * exponents)  # (half,)
    args = t.float()[:, None] * freqs[None, :]  # (B, half)
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)  # (B, dim)


class TimeEmbedding(nn.Module):
    """Sinusoidal features of t followed by a small MLP (Linear-SiLU-Linear), as in DDPM."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(t, self.dim))  # (B, hidden)


# ---------------------------------------------------------------------------------------------
# MLP noise predictor (notebook 2)
# ---------------------------------------------------------------------------------------------


class MLPDenoiser(nn.Module):
    """Residual MLP over flattened pixels; the time embedding is added inside every block.

    At large t the target noise is almost x_t itself, spread over all 784 pixel dimensions, and
    a 512-wide hidden layer cannot carry 784 independent numbers through (the loss stalls near
    (784 - 512) / 784). So the output is `mlp(x_t, t) + gain(t) * x_t`: a direct path for the
    noise scaled by one learned number per timestep, leaving the MLP to model the digit part.

    time_mode: "sinusoidal" (default: sinusoidal features -> MLP, added to each hidden layer),
    "scalar" (t / T as one raw number, fed through the same projection path) or "none" (the
    network never sees t; used by notebook 2's ablation).
    """

    def __init__(self, image_size: int = 28, hidden: int = 512, depth: int = 3,
                 time_dim: int = 128, time_mode: str = "sinusoidal", num_timesteps: int = 1000):
        super().__init__()
        if time_mode not in ("sinusoidal", "scalar", "none"):
            raise ValueError(f"time_mode must be 'sinusoidal', 'scalar' or 'none', got {time_mode!r}")
        self.image_size = image_size
        self.time_mode = time_mode
        self.num_timesteps = num_timesteps
        pixels = image_size * image_size
        if time_mode == "sinusoidal":
            self.time_embed = TimeEmbedding(time_dim, time_dim)
        elif time_mode == "scalar":
            self.time_embed = nn.Sequential(nn.Linear(1, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.inp = nn.Linear(pixels, hidden)
        self.blocks = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(depth))
        self.time_proj = nn.ModuleList(
            nn.Linear(time_dim, hidden) for _ in range(depth if time_mode != "none" else 0))
        self.out = nn.Linear(hidden, pixels)
        # direct path x_t -> eps, scaled per timestep (a constant when the model ignores t)
        self.input_gain = nn.Linear(time_dim, 1) if time_mode != "none" else nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        h = self.inp(x.reshape(batch, -1))  # (B, hidden)
        if self.time_mode == "sinusoidal":
            temb = F.silu(self.time_embed(t))  # (B, time_dim)
        elif self.time_mode == "scalar":
            temb = F.silu(self.time_embed(t.float()[:, None] / self.num_timesteps))  # (B, time_dim)
        for i, (linear, norm) in enumerate(zip(self.blocks, self.norms)):
            update = norm(h)
            if self.time_mode != "none":
                update = update + self.time_proj[i](temb)  # (B, hidden): time enters every block
            h = h + linear(F.silu(update))  # (B, hidden)
        gain = self.input_gain(temb) if self.time_mode != "none" else self.input_gain.expand(batch, 1)
        out = self.out(F.silu(h)).reshape(x.shape)  # (B, 1, 28, 28)
        return out + gain.view(batch, 1, 1, 1) * x  # (B, 1, 28, 28)


# ---------------------------------------------------------------------------------------------
# U-Net (notebook 3)
# ---------------------------------------------------------------------------------------------


class ResBlock(nn.Module):
    """GroupNorm-SiLU-Conv, + time embedding (Linear, broadcast over H and W), GroupNorm-SiLU-
    Dropout-Conv, plus a (1x1-projected) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, time_dim: int, dropout: float = 0.1, groups: int = 8):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out_ch, H, W)
        h = h + self.time_proj(F.silu(temb))[:, :, None, None]  # (B, out_ch) -> (B, out_ch, 1, 1)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))  # (B, out_ch, H, W)
        return h + self.shortcut(x)


class SelfAttention(nn.Module):
    """Single-head self-attention over the H*W positions, with a residual connection."""

    def __init__(self, channels: int, groups: int = 8):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)  # each (B, C, HW)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return x + self.proj(out.transpose(1, 2).reshape(b, c, h, w))  # (B, C, H, W)


class UNet(nn.Module):
    """Time-conditioned U-Net for (B, 1, 28, 28): levels at 28, 14 and 7 pixels.

    base_channels * channel_mults gives the width per level; each level has `num_res_blocks`
    ResBlocks (self-attention after them at resolutions in `attention_resolutions`), then a
    stride-2 conv halves the size (28 -> 14 -> 7, exact for 28x28: no padding tricks). The
    bottleneck is ResBlock-Attention-ResBlock at 7x7. The decoder mirrors the encoder: each
    ResBlock takes the matching encoder activation concatenated (skip connection); nearest
    upsampling + conv doubles the size back. Every ResBlock receives the time embedding.
    """

    def __init__(self, in_channels: int = 1, base_channels: int = 32,
                 channel_mults: tuple[int, ...] = (1, 2, 2), num_res_blocks: int = 2,
                 attention_resolutions: tuple[int, ...] = (7,), dropout: float = 0.1,
                 image_size: int = 28, groups: int = 8):
        super().__init__()
        if image_size % 2 ** (len(channel_mults) - 1):
            raise ValueError(f"image_size {image_size} must be divisible by 2**{len(channel_mults) - 1}")
        time_dim = 4 * base_channels
        self.time_embed = TimeEmbedding(base_channels, time_dim)
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        self.down = nn.ModuleList()
        skip_channels = [base_channels]
        ch, res = base_channels, image_size
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                layers = nn.ModuleList([ResBlock(ch, base_channels * mult, time_dim, dropout, groups)])
                ch = base_channels * mult
                if res in attention_resolutions:
                    layers.append(SelfAttention(ch, groups))
                self.down.append(layers)
                skip_channels.append(ch)
            if level != len(channel_mults) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                skip_channels.append(ch)
                res //= 2

        self.mid = nn.ModuleList([ResBlock(ch, ch, time_dim, dropout, groups), SelfAttention(ch, groups),
                                  ResBlock(ch, ch, time_dim, dropout, groups)])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                layers = nn.ModuleList([ResBlock(ch + skip_channels.pop(), base_channels * mult,
                                                 time_dim, dropout, groups)])
                ch = base_channels * mult
                if res in attention_resolutions:
                    layers.append(SelfAttention(ch, groups))
                self.up.append(layers)
            if level != 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"),
                                              nn.Conv2d(ch, ch, 3, padding=1)]))
                res *= 2
        self.norm_out = nn.GroupNorm(groups, ch)
        self.conv_out = nn.Conv2d(ch, in_channels, 3, padding=1)

    @staticmethod
    def _run(layers: nn.ModuleList, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time_embed(t)  # (B, 4 * base)
        h = self.conv_in(x)  # (B, base, 28, 28)
        skips = [h]
        for layers in self.down:
            h = self._run(layers, h, temb)
            skips.append(h)
        h = self._run(self.mid, h, temb)  # (B, C, 7, 7)
        for layers in self.up:
            if isinstance(layers[0], ResBlock):
                h = torch.cat([h, skips.pop()], dim=1)  # (B, C + C_skip, H, W)
            h = self._run(layers, h, temb)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, 1, 28, 28)


def build_model(config: dict) -> nn.Module:
    """Make the model a config describes: config["model"] is "mlp" or "unet"; the keys of
    config["model_kwargs"] are the constructor's arguments."""
    kind = config.get("model")
    kwargs = dict(config.get("model_kwargs", {}))
    if kind == "mlp":
        return MLPDenoiser(**kwargs)
    if kind == "unet":
        return UNet(**kwargs)
    raise ValueError(f"config['model'] must be 'mlp' or 'unet', got {kind!r}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
