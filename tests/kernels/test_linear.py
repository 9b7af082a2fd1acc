"""linear_triton / linear_silu_mul_triton (skinny GEMM of decode-sized batches) vs the torch references."""

from __future__ import annotations

import pytest
import torch
from kernel_testing import DEVICE, DTYPES, assert_close, import_kernel

reference = import_kernel("linear")
triton_linear = import_kernel("linear_triton")

# (M, N, K): ragged N (not a multiple of BLOCK_N), K a multiple of BLOCK_K and not
SHAPES = [(1, 48, 64), (3, 100, 96), (16, 40, 160), (7, 16, 32)]
CONFIGS = [None, triton_linear.LinearConfig(32, 64, 4, 2)]


def _inputs(m: int, n: int, k: int, dtype: torch.dtype, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k + 8, generator=gen)[:, 4:4 + k]  # rows strided
    weight = torch.randn(n, k, generator=gen) / k**0.5
    bias = torch.randn(n, generator=gen)
    return x.to(dtype).to(DEVICE), weight.to(dtype).to(DEVICE), bias.to(dtype).to(DEVICE)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_linear_matches_reference(shape, dtype, with_bias, config) -> None:
    m, n, k = shape
    x, weight, bias = _inputs(m, n, k, dtype, seed=m * n + k)
    bias = bias if with_bias else None
    expected = reference.linear_torch(x.float(), weight.float(), None if bias is None else bias.float())
    out = torch.full((m, n), float("nan"), dtype=dtype, device=DEVICE)
    result = triton_linear.linear_triton(x, weight, bias, config=config, out=out)
    assert result.data_ptr() == out.data_ptr() and result.dtype == dtype
    assert_close(result, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_linear_silu_mul_matches_reference(shape, dtype, config) -> None:
    m, inter, k = shape
    x, weight, _ = _inputs(m, 2 * inter, k, dtype, seed=m + inter * k)
    # the reference on the same rounded inputs, the intermediate rounded to dtype as the unfused path does
    gate_up = reference.linear_torch(x.float(), weight.float()).to(dtype)
    expected = reference.linear_silu_mul_torch(x.float(), weight.float()) if dtype == torch.float32 else (
        torch.nn.functional.silu(gate_up[:, :inter]) * gate_up[:, inter:])
    out = torch.full((m, inter), float("nan"), dtype=dtype, device=DEVICE)
    result = triton_linear.linear_silu_mul_triton(x, weight, config=config, out=out)
    assert result.shape == (m, inter)
    assert_close(result, expected, dtype)


def test_too_many_rows_is_refused() -> None:
    x, weight, _ = _inputs(triton_linear.MAX_ROWS + 1, 16, 32, torch.float32, seed=0)
    with pytest.raises(ValueError, match="at most"):
        triton_linear.linear_triton(x, weight)
