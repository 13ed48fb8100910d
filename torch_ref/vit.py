"""DeiT / ViT student in plain PyTorch (NCHW), with the original project's module names.

Mirror of ``jaxkd.models.vit``; ``state_dict()`` keys/shapes equal PEER_CHECKPOINTS.md (deit cifar: 167
entries / 4,340,660 parameters, deit mnist: 168 / 3,923,639). Attention is the explicit
``softmax(q·kᵀ·scale)·v`` (no fused kernel), GELU is exact ``nn.GELU()``, LayerNorm eps is a field.
Init as the peer: Linear weights / tokens / pos_embed trunc-normal std 0.02, biases 0, LayerNorm (1, 0),
conv weights N(0, sqrt(2 / (k²·out_channels))), conv biases 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

VARIANTS = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}


class DropPath(nn.Module):
    """Per-sample stochastic depth: ``x / keep · Bernoulli(keep)``; identity in eval mode or at rate 0."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x.div(keep) * mask


class ClsTokenDropout(nn.Module):
    """SPEC §7 ``cls_token_dropout``: in training, sample b's class token (row 0) becomes the average of its patch
    tokens (rows ``num_prefix:``) when its uniform draw u_b < p; the other rows (the dist token too) stay."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, tokens: torch.Tensor, num_prefix: int, uniform: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, T, D) -> (B, T, D); ``uniform`` (B,) fixes the draws (else ``torch.rand``)."""
        if not self.training or self.p == 0.0:
            return tokens
        if uniform is None:
            uniform = torch.rand(tokens.shape[0], device=tokens.device)
        chosen = torch.nonzero(uniform < self.p, as_tuple=True)[0]  # indices of the samples whose cls is dropped
        out = tokens.clone()
        out[chosen, 0, :] = tokens[chosen, num_prefix:, :].mean(dim=1)
        return out


class Attention(nn.Module):
    """Multi-head self-attention, qkv split as reshape(B, T, 3, H, hd)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        b, t, c = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, T, hd)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        probs = attn
        attn = self.attn_drop(attn)
        x = (attn @ v).transpose(1, 2).reshape(b, t, c)
        x = self.proj_drop(self.proj(x))
        return (x, probs) if return_attention else x


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, ln_eps: float = 1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=ln_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=ln_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        a = self.attn(self.norm1(x), return_attention=return_attention)
        a, probs = a if return_attention else (a, None)
        x = x + self.drop_path(a)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return (x, probs) if return_attention else x


class PatchEmbed(nn.Module):
    """Optional conv stem (conv3x3-BN-GELU-conv3x3-BN-GELU) then Conv(k=P, s=P); (B,C,H,W) -> (B,N,D)."""

    def __init__(self, img_size: int = 32, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 192,
                 use_conv_stem: bool = False):
        super().__init__()
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        if use_conv_stem:
            h = embed_dim // 2
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, h, 3, 1, 1, bias=False), nn.BatchNorm2d(h), nn.GELU(),
                nn.Conv2d(h, embed_dim, 3, 1, 1, bias=False), nn.BatchNorm2d(embed_dim), nn.GELU())
            proj_in = embed_dim
        else:
            self.stem = None
            proj_in = in_chans
        self.proj = nn.Conv2d(proj_in, embed_dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stem is not None:
            x = self.stem(x)
        return self.proj(x).flatten(2).transpose(1, 2)


class DeiT(nn.Module):
    def __init__(self, img_size: int = 32, patch_size: int = 4, in_channels: int = 3, num_classes: int = 10,
                 embed_dim: int = 192, depth: int = 12, num_heads: int = 3, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1, distillation: bool = True, convert_grayscale: bool = True,
                 use_conv_stem: bool = False, ln_eps: float = 1e-5, inference_mode: str = "avg",
                 cls_token_dropout: float = 0.0):
        super().__init__()
        self.inference_mode = inference_mode
        self.num_prefix_tokens = 2 if distillation else 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if distillation else None
        self.channel_expand = (nn.Conv2d(1, 3, 1, bias=False)
                               if in_channels == 1 and convert_grayscale else None)
        embed_in = 3 if self.channel_expand is not None else in_channels
        self.patch_embed = PatchEmbed(img_size, patch_size, embed_in, embed_dim, use_conv_stem)
        n = self.patch_embed.num_patches
        self.pos_embed = nn.Parameter(torch.zeros(1, n + self.num_prefix_tokens, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [i / (depth - 1) * drop_path_rate if depth > 1 else 0.0 for i in range(depth)]
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, dpr[i], ln_eps)
            for i in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=ln_eps)
        self.head = nn.Linear(embed_dim, num_classes)
        self.head_dist = nn.Linear(embed_dim, num_classes) if distillation else None
        self.cls_token_dropout = ClsTokenDropout(cls_token_dropout)  # no parameters: the state dict is unchanged
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.dist_token is not None:
            nn.init.trunc_normal_(self.dist_token, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def _features(self, x: torch.Tensor, token_layers=(), collect_attention: bool = False):
        if self.channel_expand is not None:
            x = self.channel_expand(x)
        x = self.patch_embed(x)
        b = x.shape[0]
        prefix = [self.cls_token.expand(b, -1, -1)]
        if self.dist_token is not None:
            prefix.append(self.dist_token.expand(b, -1, -1))
        x = torch.cat(prefix + [x], dim=1)
        x = self.pos_drop(x + self.pos_embed)
        # the chosen blocks' outputs are taken by forward hooks on those blocks (ModuleList indexing: negative
        # indices count from the end, out-of-range ones raise), one hook per requested position
        taken = [None] * len(token_layers)

        def keep(slot):
            def hook(_module, _inputs, out):
                taken[slot] = out[0] if isinstance(out, tuple) else out
            return hook

        handles = [self.blocks[int(i)].register_forward_hook(keep(slot)) for slot, i in enumerate(token_layers)]
        maps = []
        try:
            for blk in self.blocks:
                if collect_attention:
                    x, p = blk(x, return_attention=True)
                    maps.append(p)
                else:
                    x = blk(x)
        finally:
            for h in handles:
                h.remove()
        return self.norm(x), tuple(taken), tuple(maps)

    def forward_heads(self, x: torch.Tensor, token_layers=(), cls_drop_uniform: torch.Tensor | None = None) -> dict:
        """x (B, C, H, W) -> dict(cls (B,K), dist (B,K) | None, tokens (B,T,D) after the final LN and cls-token
        dropout (training only; ``cls_drop_uniform`` (B,) fixes its per-sample draws), blocks = tuple of (B,T,D)
        after the chosen blocks, before the final LN)."""
        tokens, blocks, _ = self._features(x, token_layers)
        tokens = self.cls_token_dropout(tokens, self.num_prefix_tokens, cls_drop_uniform)
        cls = self.head(tokens[:, 0])
        dist = self.head_dist(tokens[:, 1]) if self.head_dist is not None else None
        return {"cls": cls, "dist": dist, "tokens": tokens, "blocks": blocks}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.forward_heads(x)
        if out["dist"] is None or self.inference_mode == "cls":
            return out["cls"]
        if self.inference_mode == "dist":
            return out["dist"]
        return (out["cls"] + out["dist"]) / 2

    def attention_maps(self, x: torch.Tensor) -> tuple:
        """Per-block attention probabilities (B, heads, T, T)."""
        return self._features(x, (), collect_attention=True)[2]


def interpolate_pos_embed(pos_embed: torch.Tensor, num_prefix: int, old_grid, new_grid) -> torch.Tensor:
    """(1, prefix + gh·gw, D) -> (1, prefix + gh'·gw', D): patch part resized with
    ``F.interpolate(mode='bicubic', align_corners=False)``, prefix rows kept."""
    d = pos_embed.shape[-1]
    prefix, patches = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    grid = patches.reshape(1, old_grid[0], old_grid[1], d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False)
    return torch.cat([prefix, grid.permute(0, 2, 3, 1).reshape(1, -1, d)], dim=1)
