"""rms_norm_triton vs rms_norm_torch, with and without the fused residual add."""

from __future__ import annotations

import pytest
import torch
from kernel_testing import DEVICE, DTYPES, import_kernel

reference = import_kernel("rms_norm")
triton_norm = import_kernel("rms_norm_triton")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("hidden", [64, 200])
def test_matches_reference(hidden: int, with_residual: bool, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(hidden)
    wide = (torch.randn(7, hidden + 16, generator=gen) * 3).to(dtype).to(DEVICE)
    x = wide[:, 8:8 + hidden]  # row stride != hidden
    residual = torch.randn(7, hidden, generator=gen).to(dtype).to(DEVICE) if with_residual else None
    weight = (1 + torch.randn(hidden, generator=gen) / 4).to(dtype).to(DEVICE)
    expected_out, expected_residual = reference.rms_norm_torch(x, weight, 1e-6, residual)
    out, new_residual = triton_norm.rms_norm_triton(x, weight, 1e-6, residual)
    assert out.dtype == expected_out.dtype and new_residual.dtype == expected_residual.dtype
    if with_residual:
        torch.testing.assert_close(new_residual, expected_residual, atol=0, rtol=0)
    else:
        assert new_residual is x
    # same rounding steps; only the fp32 sum of squares may differ in order (one ulp of the output)
    ulp = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    torch.testing.assert_close(out, expected_out, atol=ulp, rtol=ulp)
