"""Swin Transformer parts used by RemoteSAM's multi-modal backbone (Liu et al., ICCV 2021; LAVT/RMSIN variant).

Reproduces the official ``lib/backbone.py`` semantics: windows are always ``window_size`` (the feature map is zero
padded to a multiple of it, even when smaller), odd blocks are shifted by ``window_size // 2`` with a -100 attention
mask between regions, relative-position bias, patch embedding zero-padded on the right/bottom *after* normalisation,
and PatchMerging padding odd sizes.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from rsam.models.norms import LOW_PRECISION, LayerNorm, autocast_dtype, autocast_off, fp32

SHIFT_MASK_FILL = -100.0


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def _partitioned(param: torch.Tensor) -> bool:
    """True for a parameter sharded by DeepSpeed ZeRO-3 (it carries ``ds_id`` and is gathered only while its own
    module's forward runs), so it must be used through that module, not read directly."""
    return hasattr(param, "ds_id")


class _NormMlpFunction(torch.autograd.Function):
    """``fc2(gelu(fc1(layer_norm(x))))`` keeping only ``x`` and ``fc1``'s output for backward.

    A Swin block's MLP branch saves, in plain autograd, the norm's input and output (C per token each), ``fc1``'s
    output and the GELU output (4·C each). Here backward recomputes the two cheap elementwise parts, the norm (from
    ``x``, which the function keeps anyway for the norm's gradient) and the GELU (from ``fc1``'s output), and
    never a matmul; it returns the exact gradients of the composition. ``mm_dtype`` is the autocast dtype the
    matmuls run in (the norm computes in float32 and its output is cast, as :class:`rsam.models.norms.LayerNorm`
    followed by an autocast ``F.linear``).
    """

    @staticmethod
    def _norm(x, norm_weight, norm_bias, eps, mm_dtype):
        normed, mean, rstd = torch.native_layer_norm(x, x.shape[-1:], norm_weight, norm_bias, eps)
        return normed.to(mm_dtype), mean, rstd

    @staticmethod
    def forward(ctx, x, norm_weight, norm_bias, eps, fc1_weight, fc1_bias, fc2_weight, fc2_bias, mm_dtype):
        normed, *_ = _NormMlpFunction._norm(x, norm_weight, norm_bias, eps, mm_dtype)
        hidden = F.linear(normed, fc1_weight.to(mm_dtype), fc1_bias.to(mm_dtype))
        del normed
        ctx.save_for_backward(x, hidden, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
        ctx.eps, ctx.mm_dtype = eps, mm_dtype
        return F.linear(F.gelu(hidden), fc2_weight.to(mm_dtype), fc2_bias.to(mm_dtype))

    @staticmethod
    def backward(ctx, grad_out):
        x, hidden, norm_weight, norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias = ctx.saved_tensors
        dtype = ctx.mm_dtype
        grad_out = grad_out.to(dtype).reshape(-1, grad_out.shape[-1])
        hidden = hidden.reshape(grad_out.shape[0], -1)
        activated = F.gelu(hidden)
        grad_fc2_weight = (grad_out.t() @ activated).to(fc2_weight.dtype)
        grad_fc2_bias = grad_out.sum(0).to(fc2_bias.dtype)
        del activated
        grad_hidden = torch.ops.aten.gelu_backward(grad_out @ fc2_weight.to(dtype), hidden)
        del hidden
        normed, mean, rstd = _NormMlpFunction._norm(x, norm_weight, norm_bias, ctx.eps, dtype)
        grad_fc1_weight = (grad_hidden.t() @ normed.reshape(grad_hidden.shape[0], -1)).to(fc1_weight.dtype)
        grad_fc1_bias = grad_hidden.sum(0).to(fc1_bias.dtype)
        del normed
        grad_normed = (grad_hidden @ fc1_weight.to(dtype)).to(x.dtype).view(x.shape)
        del grad_hidden
        grad_x, grad_norm_weight, grad_norm_bias = torch.ops.aten.native_layer_norm_backward(
            grad_normed, x, x.shape[-1:], mean, rstd, norm_weight, norm_bias, [True, True, True]
        )
        return (grad_x, grad_norm_weight, grad_norm_bias, None, grad_fc1_weight, grad_fc1_bias, grad_fc2_weight,
                grad_fc2_bias, None)  # fmt: skip


def norm_mlp(norm: nn.LayerNorm, mlp: Mlp, x: torch.Tensor) -> torch.Tensor:
    """``mlp(norm(x))``; in training, with the norm and the GELU recomputed in backward (:class:`_NormMlpFunction`).

    The plain modules run where the fused function does not apply: no autograd, dropout in the MLP, parameters
    sharded by ZeRO-3, or a norm converted to low precision (its parent's rule, :mod:`rsam.models.norms`).
    """
    params = (norm.weight, norm.bias, mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias)
    if (
        not torch.is_grad_enabled()
        or mlp.drop.p != 0.0
        or any(p is None or _partitioned(p) for p in params)
        or norm.weight.dtype in LOW_PRECISION
    ):
        return mlp(norm(x))
    mm_dtype = autocast_dtype(x.device) or norm.weight.dtype
    with autocast_off(x.device):
        out = _NormMlpFunction.apply(fp32(x), *params[:2], norm.eps, *params[2:], mm_dtype)
    return out


class DropPath(nn.Module):
    """A residual branch under stochastic depth per sample: ``x + drop_path(branch(x))``.

    In training each sample keeps the branch with probability ``1 - p`` (its output then scaled by ``1 / (1 - p)``)
    and otherwise gets ``x`` unchanged, as the official ``DropPath`` (timm's). The official code computes the branch
    for every sample and multiplies the dropped ones by zero; here the branch runs only on the samples that keep it,
    forward and backward, so a dropped branch costs no FLOPs and keeps no activations. With the official rates
    (0 to 0.3 over Swin-B's 24 blocks) 15 % of the blocks' branches are dropped per sample on average. The draws
    come from the host's generator, so choosing the samples never waits on a device. In eval: ``x + branch(x)``.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor, branch) -> torch.Tensor:
        """x (B, ...); ``branch`` maps a (b, ...) batch of samples to its (b, ...) branch output."""
        if not self.training or self.p == 0.0:
            return x + branch(x)
        keep = 1.0 - self.p
        kept = torch.empty(x.shape[0]).bernoulli_(keep).nonzero().squeeze(1)
        if kept.numel() == x.shape[0]:
            return torch.add(x, branch(x), alpha=1.0 / keep)
        if kept.numel() == 0:
            return x
        kept = kept.to(x.device)
        return x.index_add(0, kept, branch(x.index_select(0, kept)), alpha=1.0 / keep)


def relative_position_index(window: int) -> torch.Tensor:
    """(window², window²) index into the (2w-1)² bias table, row-major over (dy, dx)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, window * window, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


@functools.lru_cache(maxsize=64)
def window_order(
    batch: int, h: int, w: int, window: int, shift: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices between a batch of (h, w) token grids in raster order and their shifted windows.

    The official layout: each grid is zero padded right/bottom to multiples of ``window``, cyclically shifted by
    ``-shift`` and cut into windows (row-major windows, row-major tokens in each). The grids' rows are those of a
    (batch·t, C) tensor, t = h·w tokens per sample plus, when the grid needs padding, one padding token last.
    Returns ``gather`` (batch·nW·window²,): for each window token, the row it holds (the sample's padding token
    for a padding position), and ``scatter`` (batch·h·w,): for each grid token, its row among the window tokens.
    """
    with torch.inference_mode(False):  # cached, so never an inference tensor that training could not save
        hp, wp = -(-h // window) * window, -(-w // window) * window
        nh, nw = hp // window, wp // window
        rows = torch.arange(hp).view(nh, 1, window, 1).expand(nh, nw, window, window)
        cols = torch.arange(wp).view(1, nw, 1, window).expand(nh, nw, window, window)
        rows, cols = (rows + shift) % hp, (cols + shift) % wp  # where each window token was before the shift
        gather = torch.where((rows < h) & (cols < w), rows * w + cols, h * w).reshape(-1)
        rows, cols = (torch.arange(h).view(h, 1) - shift) % hp, (torch.arange(w).view(1, w) - shift) % wp
        scatter = (((rows // window * nw + cols // window) * window + rows % window) * window + cols % window).view(-1)
        per_sample = h * w + (hp * wp > h * w)
        gather = (gather + torch.arange(batch).view(-1, 1) * per_sample).view(-1)
        scatter = (scatter + torch.arange(batch).view(-1, 1) * (hp * wp)).view(-1)
        return gather.to(device), scatter.to(device)


def shifted_window_mask(hp: int, wp: int, window: int, shift: int, device=None, dtype=None) -> torch.Tensor:
    """(nW, window², window²) additive mask: 0 within a region, -100 across regions of the cyclically shifted map."""
    region = torch.zeros((1, hp, wp, 1), device=device, dtype=dtype)
    slices = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for hs in slices:
        for ws in slices:
            region[:, hs, ws, :] = label
            label += 1
    windows = window_partition(region, window).squeeze(-1)
    diff = windows.unsqueeze(1) - windows.unsqueeze(2)
    return diff.masked_fill(diff != 0, SHIFT_MASK_FILL).masked_fill(diff == 0, 0.0)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, h: int, w: int, shift: int, mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, h·w, C) normalised tokens -> (B, h·w, C): attention within the shifted windows, then ``proj``.

        The official code pads the grid with zero tokens, shifts it, cuts it into windows and runs ``qkv``,
        attention and ``proj`` on every window token, padding included (up to 65 % more tokens than the grid, on
        Swin-B's last stage at 896²). Here ``qkv`` runs on the grid's tokens and one zero token, whose ``qkv``
        (the bias) stands for every padding token; one gather builds the windows (:func:`window_order`), and
        ``proj`` runs after the padding is dropped again. Each token sees the same numbers as in the official
        layout, so the outputs are the same. ``mask``: (nW, n, n) additive shift mask, used when ``shift``.
        """
        b, tokens, c = x.shape
        win, heads = self.window, self.num_heads
        n = win * win
        gather, scatter = window_order(b, h, w, win, shift, x.device)
        if gather.numel() > b * tokens:  # the grid is padded: one padding token per sample, as window_order counts
            x = torch.cat([x, x.new_zeros(b, 1, c)], 1)
        # rows of one (B·t, 3C) matrix: index_select on dim 0 copies whole rows (and runs at copy speed)
        qkv = self.qkv(x).view(-1, 3 * c).index_select(0, gather)
        # q, k, v as contiguous slices of one (3, B·nW, heads, n, d) buffer (unbind, whose backward is one stack,
        # not three zero-filled selects), so no matmul below copies them again
        q, k, v = qkv.view(-1, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).contiguous().unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, heads).permute(2, 0, 1).contiguous()  # (heads, n, n)
        out = window_attention(q, k, v, bias, mask if shift else None, self.scale)
        return self.proj(out.transpose(1, 2).reshape(-1, c).index_select(0, scatter).view(b, tokens, c))


def _attention_mask(bias: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(heads, n, n) bias [+ (nW, n, n) mask] -> an additive mask for the folded layout of :func:`_sdpa`."""
    if mask is None:
        return bias.unsqueeze(0)
    heads, n = bias.shape[:2]
    return (bias.unsqueeze(0) + mask.unsqueeze(1)).view(1, mask.shape[0] * heads, n, n)


def _sdpa(q, k, v, attn_mask, windows: int, scale: float) -> torch.Tensor:
    """One ``scaled_dot_product_attention`` call; with a shift mask, a sample's windows are folded into the head
    axis so that the (nW·heads, n, n) mask broadcasts over the batch without a copy."""
    if windows == 1:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
    bw, heads, n, d = q.shape
    fold = (bw // windows, windows * heads, n, d)
    out = F.scaled_dot_product_attention(
        q.reshape(fold), k.reshape(fold), v.reshape(fold), attn_mask=attn_mask, scale=scale
    )
    return out.view(bw, heads, n, d)


class _WindowAttentionFunction(torch.autograd.Function):
    """Window attention whose backward recomputes the attention matrix instead of keeping it.

    Forward: the fused ``scaled_dot_product_attention`` kernel. Saved for backward: q, k, v, the (heads, n, n)
    bias and the stage's shared shift mask — not the (B·nW, heads, n, n) probabilities, which are the largest
    activations of a Swin block at 896² (120 MB per stage-1 block in fp32). Backward recomputes them once
    (one matmul + softmax) and returns the exact softmax-attention gradients, the bias gradient included.
    Matmuls run in the inputs' dtype, the softmax and its gradient in float32.
    """

    @staticmethod
    def forward(ctx, q, k, v, bias, mask, scale):
        windows = 1 if mask is None else mask.shape[0]
        # detached: PyTorch takes its fused CPU kernel only for a mask that does not require grad (without a shift
        # mask, the bias itself is the mask), and otherwise the math path, which builds the attention matrix
        out = _sdpa(q, k, v, _attention_mask(bias.detach(), mask).to(q.dtype), windows, scale)
        ctx.save_for_backward(q, k, v, bias, mask)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, bias, mask = ctx.saved_tensors
        scale = ctx.scale
        bw, heads, n, _ = q.shape
        grad_out = grad_out.to(v.dtype).contiguous()  # it arrives transposed (the output's head/token swap)
        acc = torch.float32 if q.dtype in LOW_PRECISION else q.dtype  # softmax and its gradient
        scores = torch.matmul(q, k.transpose(-2, -1)).to(acc).mul_(scale)
        scores = scores.view(-1, 1 if mask is None else mask.shape[0], heads, n, n)
        scores += bias.to(acc)
        if mask is not None:
            scores += mask.to(acc).unsqueeze(1)
        probs = scores.view(bw, heads, n, n).softmax(dim=-1)
        del scores
        grad_v = torch.matmul(probs.to(v.dtype).transpose(-2, -1), grad_out)
        grad_probs = torch.matmul(grad_out, v.transpose(-2, -1)).to(acc)
        grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, acc)
        del grad_probs, probs
        grad_bias = None
        if ctx.needs_input_grad[3]:
            grad_bias = grad_scores.view(-1, heads, n, n).sum(0).to(bias.dtype)
        grad_scores = grad_scores.mul_(scale).to(q.dtype)
        grad_q = torch.matmul(grad_scores, k)
        grad_k = torch.matmul(grad_scores.transpose(-2, -1), q)
        return grad_q, grad_k, grad_v, grad_bias, None, None


def window_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """softmax(q·k^T·scale + bias[head] + mask[window])·v for q, k, v (B·nW, heads, n, d), bias (heads, n, n),
    mask (nW, n, n) or None.

    Without autograd: one fused ``scaled_dot_product_attention`` call (it never materialises the attention matrix
    on CPU; its softmax accumulates in float32 under bf16 autocast). With autograd: the same forward, and a backward
    that recomputes the attention matrix (:class:`_WindowAttentionFunction`).
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, bias)):
        dtype = autocast_dtype(q.device)
        if dtype is not None:
            q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
        with autocast_off(q.device):
            return _WindowAttentionFunction.apply(q, k, v, bias, mask, scale)
    windows = 1 if mask is None else mask.shape[0]
    return _sdpa(q, k, v, _attention_mask(bias, mask), windows, scale)


class SwinBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int,
        shift: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path: float,
        eps: float,
    ):
        super().__init__()
        self.shift = shift
        self.norm1 = LayerNorm(dim, eps=eps)
        self.attn = WindowAttention(dim, window, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, h: int, w: int, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.drop_path(x, lambda t: self.attn(self.norm1(t), h, w, self.shift, mask))
        return self.drop_path(x, lambda t: norm_mlp(self.norm2, self.mlp, t))


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat (order x[0::2,0::2], x[1::2,0::2], x[0::2,1::2], x[1::2,1::2]) -> LN -> Linear."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = LayerNorm(4 * dim, eps=eps)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int, eps: float, in_chans: int = 3):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.norm = LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, ceil(H/p), ceil(W/p)); zero padding right/bottom as the official code."""
        h, w = x.shape[-2:]
        if w % self.patch:
            x = F.pad(x, (0, self.patch - w % self.patch))
        if h % self.patch:
            x = F.pad(x, (0, 0, 0, self.patch - h % self.patch))
        x = self.proj(x)
        b, c, gh, gw = x.shape
        x = self.norm(x.flatten(2).transpose(1, 2))
        return x.transpose(1, 2).reshape(b, c, gh, gw)
