"""Weight quantizers in plain torch: round-to-nearest (RTN) and GPTQ.

Both produce a `QuantizedWeight` (signed integers, scales, optional zero points) for one linear
weight W [N out, K in]; packing and kernels never see how the integers were chosen.

Why GPTQ rather than AWQ. The forge's int4 target is to recover at least half of the perplexity
gap between RTN and full precision, from a small calibration set drawn from the training split,
on 2 CPU cores. AWQ only rescales input channels by a per-channel factor found by grid search and
then still rounds every weight to nearest; it protects the few salient channels but cannot undo
the rounding error of the rest. GPTQ (Frantar et al., 2022) minimizes the layer's output error
||X W^T - X Q^T||^2 directly: it quantizes one input column at a time and spreads that column's
rounding error onto the not-yet-quantized columns through the inverse Hessian H = 2 X^T X / n,
so the errors cancel on the calibration activations. It needs only H (K x K per layer, accumulated
in one forward pass), no search and no extra tensors at inference time (AWQ's scales must be
folded into the previous op, which breaks for layers whose input is not produced by a
scalable op). Its results also land in the plain group-wise format every engine reads.

GPTQ details implemented here (the paper's algorithm, with the usual refinements):
- damping: H += damp_percent * mean(diag H) * I, raised tenfold (up to 3 times) if the Cholesky
  factorization still fails; dead inputs (diag H == 0) get H_ii = 1 and a zero weight column;
- lazy blocked updates: columns are processed in blocks of `block_size`; inside a block the error
  is propagated column by column, to the rest of the matrix once per block (one GEMM);
- groups: a group's scale/zero is computed when the scan reaches its first column, from the
  already error-compensated weights (block_size is a multiple of the group size, so a group never
  straddles a block);
- act_order: columns are processed by decreasing diag(H) (most active inputs first, while there is
  the most freedom left to compensate). Group parameters are then computed up front from the
  original weights in natural column order ("static groups"), so the stored layout needs no
  group-index permutation (g_idx) and the kernels stay unchanged.
"""

from __future__ import annotations

import torch

from kernels.errors import ShapeError
from kernels.packing import QuantizedWeight
from kernels.scheme import QuantScheme


def compute_qparams(
    groups: torch.Tensor, bits: int, symmetric: bool, scale_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Min-max scales (and zero points) for weights grouped as [N, num_groups, G] (fp32).

    Same rule as compressed-tensors' observer: the range always contains 0; symmetric uses
    scale = max|w| / ((qmax - qmin) / 2); asymmetric uses scale = (max - min) / (qmax - qmin) and
    zero = round(qmin - min / scale). The scale is rounded to `scale_dtype` before the zero point
    is derived, so that dequantizing with the stored scale reproduces our integers' targets.
    Returns scale [N, num_groups] in `scale_dtype` and zero int8 [N, num_groups] (or None).
    """
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    lo = groups.amin(-1).clamp(max=0)
    hi = groups.amax(-1).clamp(min=0)
    if symmetric:
        scale = torch.maximum(-lo, hi) / ((qmax - qmin) / 2)
    else:
        scale = (hi - lo) / (qmax - qmin)
    tiny = torch.finfo(scale_dtype).eps
    scale = torch.where(scale == 0, torch.full_like(scale, tiny), scale).to(scale_dtype)
    if symmetric:
        return scale, None
    zero = torch.round(qmin - lo / scale.float()).clamp(qmin, qmax).to(torch.int8)
    return scale, zero


def _quantize_columns(
    w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, qmin: int, qmax: int
) -> torch.Tensor:
    """round(w / scale + zero), clamped; all arguments broadcast; returns fp32 integers."""
    q = torch.round(w / scale.float())
    if zero is not None:
        q = q + zero.float()
    return q.clamp(qmin, qmax)


def quantize_rtn(weight: torch.Tensor, scheme: QuantScheme, scale_dtype: torch.dtype | None = None) -> QuantizedWeight:
    """Round-to-nearest quantization of W [N, K] with min-max group parameters."""
    w = _check_weight(weight, scheme)
    n, k = w.shape
    g = scheme.group_size or k
    scale_dtype = scale_dtype or weight.dtype
    groups = w.view(n, k // g, g)
    scale, zero = compute_qparams(groups, scheme.bits, scheme.symmetric, scale_dtype)
    z = None if zero is None else zero.unsqueeze(-1)
    q = _quantize_columns(groups, scale.unsqueeze(-1), z, scheme.qmin, scheme.qmax)
    return QuantizedWeight(q.view(n, k).to(torch.int8), scale, zero, scheme.bits, scheme.group_size)


class HessianAccumulator:
    """Running H = 2/n * sum_i x_i x_i^T over calibration inputs x [..., K] of one linear layer."""

    def __init__(self, in_features: int, device: torch.device | str = "cpu") -> None:
        self.hessian = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        self.count = 0  # number of input rows (tokens) seen

    def add_batch(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, self.hessian.shape[0]).to(self.hessian.device, torch.float32)
        rows = x.shape[0]
        if rows == 0:
            return
        total = self.count + rows
        # rescale the old mean, then add the new rows, so H stays an average (no overflow)
        self.hessian.mul_(self.count / total)
        x = x * (2.0 / total) ** 0.5
        self.hessian.addmm_(x.t(), x)
        self.count = total


def _inverse_hessian_factor(h: torch.Tensor, damp_percent: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp I)^-1 [K, K]; retries with 10x damping on failure."""
    mean_diag = torch.diagonal(h).mean().clamp(min=1e-8)
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    damp = max(damp_percent, 1e-6)
    for _ in range(4):
        try:
            lower = torch.linalg.cholesky(h + damp * mean_diag * eye)
            return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True)
        except torch.linalg.LinAlgError:
            damp *= 10
    raise ShapeError(
        "GPTQ: the calibration Hessian is not positive definite even with strong damping; "
        "use more (and more varied) calibration tokens or a larger damp_percent"
    )


@torch.no_grad()
def quantize_gptq(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    scheme: QuantScheme,
    scale_dtype: torch.dtype | None = None,
) -> QuantizedWeight:
    """GPTQ quantization of W [N, K] given the input Hessian H [K, K] (see module docstring)."""
    w = _check_weight(weight, scheme).clone()
    n, k = w.shape
    if tuple(hessian.shape) != (k, k):
        raise ShapeError(f"GPTQ: Hessian must be [{k}, {k}] for a weight with {k} inputs, got {tuple(hessian.shape)}")
    g = scheme.group_size or k
    scale_dtype = scale_dtype or weight.dtype
    h = hessian.to(w.device, torch.float32).clone()

    dead = torch.diagonal(h) == 0  # inputs never active in calibration: weight cannot matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0

    # static group parameters: per channel always, per group when columns are permuted
    static = scheme.act_order or scheme.group_size is None
    scale = torch.empty(n, k // g, dtype=scale_dtype, device=w.device)
    zero = None if scheme.symmetric else torch.empty(n, k // g, dtype=torch.int8, device=w.device)
    if static:
        s, z = compute_qparams(w.view(n, k // g, g), scheme.bits, scheme.symmetric, scale_dtype)
        scale.copy_(s)
        if zero is not None:
            zero.copy_(z)

    perm = None
    if scheme.act_order:
        perm = torch.argsort(torch.diagonal(h), descending=True)
        w, h = w[:, perm], h[perm][:, perm]
    column_group = (perm if perm is not None else torch.arange(k, device=w.device)) // g

    hinv = _inverse_hessian_factor(h, scheme.damp_percent)
    q_all = torch.zeros_like(w)
    block = scheme.block_size
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = w[:, i1:i2].clone()  # [N, B] columns being quantized, updated in place
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if not static and col % g == 0:
                # this group's columns all lie in the block (block % g == 0 and i1 % g == 0)
                s, z = compute_qparams(w1[:, i : i + g].unsqueeze(1), scheme.bits, scheme.symmetric, scale_dtype)
                scale[:, col // g] = s[:, 0]
                if zero is not None:
                    assert z is not None  # an asymmetric scheme (it has a zero buffer) gets zero points
                    zero[:, col // g] = z[:, 0]
            grp = column_group[col]
            s_col = scale[:, grp].float()
            z_col = None if zero is None else zero[:, grp].float()
            q = _quantize_columns(w1[:, i], s_col, z_col, scheme.qmin, scheme.qmax)
            deq = (q - (0 if z_col is None else z_col)) * s_col
            q1[:, i] = q
            # spread this column's rounding error over the remaining columns of the block
            err = (w1[:, i] - deq) / hinv1[i, i]
            w1[:, i:] -= err.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
            err1[:, i] = err
        q_all[:, i1:i2] = q1
        # lazy update: the block's accumulated error reaches the later columns in one GEMM
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]

    if perm is not None:
        q_all = q_all[:, torch.argsort(perm)]
    return QuantizedWeight(q_all.to(torch.int8), scale, zero, scheme.bits, scheme.group_size)


def _check_weight(weight: torch.Tensor, scheme: QuantScheme) -> torch.Tensor:
    if weight.ndim != 2 or weight.shape[0] == 0 or weight.shape[1] == 0:
        raise ShapeError(f"expected a non-empty 2-D weight [out, in], got shape {tuple(weight.shape)}")
    if not weight.is_floating_point():
        raise ShapeError(f"expected a floating-point weight, got {weight.dtype}")
    if scheme.group_size is not None and weight.shape[1] % scheme.group_size:
        raise ShapeError(
            f"in_features {weight.shape[1]} is not divisible by group_size {scheme.group_size}; "
            "use a smaller group size or leave this layer unquantized (scheme.ignore)"
        )
    return weight.detach().to(torch.float32)
