"""Transformer parts (Vaswani et al. 2017, "Attention Is All You Need", https://arxiv.org/abs/1706.03762),
written from the equations of note 003 ("Transformer" and "ViT" sections).

- :func:`scaled_dot_product_attention`: Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V (eq. 1), with the
  decoder's causal mask and an optional boolean or additive mask. ``torch.nn.functional.scaled_dot_product_attention``
  computes the same function with fused kernels; `MultiHeadAttention` calls it by default (``fused=True``), and the
  tests check the two agree.
- :class:`MultiHeadAttention`: MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O with
  head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V) (Sec. 3.2.2): h heads of width d_k = d_model / h in parallel,
  concatenated, then one linear map. Parameters in ``torch.nn.MultiheadAttention``'s layout (``in_proj_weight`` =
  [W^Q; W^K; W^V] stacked, ``out_proj`` = W^O), which is also torchvision's ViT checkpoint layout.
- :class:`Mlp`: the position-wise feed-forward network (Sec. 3.3): two linear layers, the activation after the first.
- :class:`TransformerEncoderLayer`: ViT's pre-norm encoder layer (Dosovitskiy et al. 2021, eq. 2-3):
  z' = MSA(LN(z)) + z, z'' = MLP(LN(z')) + z'.
- :func:`sinusoidal_position_encoding`: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d))
  (Sec. 3.5), added to the token embeddings (not concatenated).
- :func:`resample_pos_embed`: a grid of position embeddings resized for another input size (bicubic on the 2-D
  grid, the class token's embedding kept), as timm's ``resample_abs_pos_embed`` does.

Token tensors are (B, N, D): batch, tokens, channels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .activations import get_act
from .drop import DropPath

__all__ = [
    "Mlp",
    "MultiHeadAttention",
    "TransformerEncoderLayer",
    "resample_pos_embed",
    "scaled_dot_product_attention",
    "sinusoidal_position_encoding",
]


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d_k) + mask) V, eq. 1 of Vaswani et al.; the arguments of ``F.scaled_dot_product_attention``.

    Args:
        query: (..., L, d_k); key: (..., S, d_k); value: (..., S, d_v).
        attn_mask: broadcastable to (..., L, S): boolean (True = may attend) or float (added to the scores).
        dropout_p: dropout on the attention weights (pass 0 in eval mode, as with F.scaled_dot_product_attention).
        is_causal: the decoder's mask: query i attends to keys 0..i only.
        scale: the factor on Q K^T; None: 1 / sqrt(d_k), which keeps the scores' variance ~1 for unit-variance
            inputs so the softmax does not saturate (Sec. 3.2.1).

    Returns:
        (..., L, d_v). A query row whose keys are all masked out gives NaN (softmax of all -inf), where the fused
        kernels give 0: mask at least one key per query.
    """
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = (query * scale) @ key.transpose(-2, -1)  # (..., L, S): QK^T / sqrt(d_k)
    if is_causal:
        length, source = query.shape[-2], key.shape[-2]
        keep = torch.ones(length, source, dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    weights = scores.softmax(dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, dropout_p)
    return weights @ value  # (..., L, d_v)


class MultiHeadAttention(nn.Module):
    """Multi-head attention (Vaswani et al. Sec. 3.2.2) in ``torch.nn.MultiheadAttention``'s parameter layout.

    Args:
        embed_dim: d_model.
        num_heads: h; d_k = d_v = d_model / h.
        bias: biases on the projections (ViT has them).
        attn_drop: dropout on the attention weights.
        proj_drop: dropout after the output projection W^O.
        fused: compute the attention with ``F.scaled_dot_product_attention`` (fused kernels: less memory, faster);
            False: with `scaled_dot_product_attention`, the equation written out. Same function either way.
    """

    def __init__(self, embed_dim: int, num_heads: int, *, bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, fused: bool = True):
        super().__init__()
        if embed_dim < 1 or num_heads < 1 or embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be a positive multiple of num_heads ({num_heads}): each "
                             f"head gets embed_dim / num_heads channels")
        for what, p in (("attn_drop", attn_drop), ("proj_drop", proj_drop)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{what} must be in [0, 1), got {p}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.attn_drop, self.fused = attn_drop, fused
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))  # [W^Q; W^K; W^V]
        self.register_parameter("in_proj_bias", nn.Parameter(torch.empty(3 * embed_dim)) if bias else None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)  # W^O
        self.proj_drop = nn.Dropout(proj_drop)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch.nn.MultiheadAttention's init: Xavier-uniform [W^Q; W^K; W^V], zero biases."""
        nn.init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, N, D) -> (B, h, N, d_k)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        """Self-attention over ``x`` (B, N, D), or cross-attention of ``x``'s queries to ``context`` (B, S, D)."""
        b, n, d = x.shape
        if context is None:
            qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, N, 3D): Q, K, V in one product
            q, k, v = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            w_q, w_kv = self.in_proj_weight.split((d, 2 * d))
            b_q, b_kv = self.in_proj_bias.split((d, 2 * d)) if self.in_proj_bias is not None else (None, None)
            q = self._heads(F.linear(x, w_q, b_q))
            k, v = (self._heads(t) for t in F.linear(context, w_kv, b_kv).chunk(2, dim=-1))
        attend = F.scaled_dot_product_attention if self.fused else scaled_dot_product_attention
        out = attend(q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop if self.training else 0.0,
                     is_causal=is_causal)  # (B, h, N, d_k)
        out = out.transpose(1, 2).reshape(b, n, d)  # Concat(head_1, ..., head_h)
        return self.proj_drop(self.out_proj(out))


class Mlp(nn.Sequential):
    """Position-wise feed-forward network (Vaswani et al. Sec. 3.3; ViT's MLP block): fc -> act -> drop -> fc -> drop.

    An ``nn.Sequential`` so that its keys are torchvision's ViT ``mlp.0`` / ``mlp.3``.
    """

    def __init__(self, dim: int, hidden_dim: int, act_layer: str | Callable[..., nn.Module] = "gelu",
                 drop: float = 0.0):
        super().__init__(nn.Linear(dim, hidden_dim), get_act(act_layer), nn.Dropout(drop),
                         nn.Linear(hidden_dim, dim), nn.Dropout(drop))


class TransformerEncoderLayer(nn.Module):
    """ViT's pre-norm encoder layer (Dosovitskiy et al. 2021, eq. 2-3), torchvision's ``EncoderBlock`` layout:

    z' = MSA(LN(z)) + z;  z'' = MLP(LN(z')) + z'.

    Args:
        dim, num_heads, mlp_dim: width, heads, hidden width of the MLP.
        drop: dropout after the attention's output projection and after each MLP layer (the paper's "after every
            dense layer except for the qkv-projections").
        attn_drop: dropout on the attention weights.
        drop_path: stochastic depth on both residual branches (DeiT's regulariser; 0 in the paper).
        act_layer: the MLP's activation (GELU in the paper).
        norm_eps: LayerNorm epsilon (1e-6 in the paper's JAX code, torchvision and timm).
        fused: see `MultiHeadAttention`.
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, *, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, act_layer: str | Callable[..., nn.Module] = "gelu", norm_eps: float = 1e-6,
                 fused: bool = True):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=norm_eps)
        self.self_attention = MultiHeadAttention(dim, num_heads, attn_drop=attn_drop, fused=fused)
        self.dropout = nn.Dropout(drop)
        self.ln_2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_dim, act_layer, drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.dropout(self.self_attention(self.ln_1(x))))  # (B, N, D), eq. 2
        return x + self.drop_path(self.mlp(self.ln_2(x)))  # eq. 3


def sinusoidal_position_encoding(num_positions: int, dim: int, *, base: float = 10000.0,
                                 device: torch.device | str | None = None,
                                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(num_positions, dim): PE(pos, 2i) = sin(pos / base^(2i/dim)), PE(pos, 2i+1) = cos(pos / base^(2i/dim)).

    Vaswani et al. Sec. 3.5 (note 003's formula): even channels take the sine, odd ones the cosine of the same
    frequency; frequencies fall geometrically from 1 to 1/base over the channels, so low channels tell neighbouring
    positions apart and high channels distant ones. An odd ``dim`` ends with a sine channel.
    """
    if num_positions < 1 or dim < 1:
        raise ValueError(f"num_positions and dim must be >= 1, got {num_positions} and {dim}")
    # computed in float64 on the CPU (exact enough at any position, and on devices without float64), then moved
    pos = torch.arange(num_positions, device="cpu", dtype=torch.float64)[:, None]
    channel = torch.arange(dim, device="cpu")
    angle = pos / base ** ((channel // 2 * 2).to(torch.float64) / dim)  # 2i for channels 2i and 2i + 1
    table = torch.where(channel % 2 == 0, angle.sin(), angle.cos())
    return table.to(device=device if device is not None else torch.get_default_device(), dtype=dtype)


def resample_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int],
                       num_prefix_tokens: int = 1) -> torch.Tensor:
    """Position embeddings (1, prefix + old_h * old_w, D) for a (new_h, new_w) grid of patches.

    The prefix tokens' embeddings (the class token's) are kept; the grid's are resized as a D-channel image with
    antialiased bicubic interpolation (timm's ``resample_abs_pos_embed``), so a network trained at one resolution
    runs at another (Dosovitskiy et al. Sec. 3.2, "Fine-tuning and higher resolution").
    """
    new_grid, old_grid = tuple(new_grid), tuple(old_grid)
    if new_grid == old_grid:
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    d = grid.shape[-1]
    grid = grid.reshape(1, *old_grid, d).permute(0, 3, 1, 2)  # (1, D, old_h, old_w)
    grid = F.interpolate(grid.float(), size=new_grid, mode="bicubic", antialias=True, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], d).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)
