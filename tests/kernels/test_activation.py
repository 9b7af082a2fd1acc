"""silu_and_mul_triton vs silu_and_mul_torch."""

from __future__ import annotations

import pytest
import torch
from kernel_testing import DEVICE, DTYPES, import_kernel

reference = import_kernel("activation")
triton_activation = import_kernel("activation_triton")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(5, 2 * 96), (2, 3, 2 * 1500)], ids=str)
def test_matches_reference(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(shape[-1])
    wide = (torch.randn(*shape[:-1], shape[-1] + 8, generator=gen) * 4).to(dtype).to(DEVICE)
    x = wide[..., 4:4 + shape[-1]]  # rows strided
    expected = reference.silu_and_mul_torch(x)
    out = triton_activation.silu_and_mul_triton(x)
    assert out.shape == expected.shape and out.dtype == dtype
    # exp / division may differ by an ulp in fp32 before rounding
    ulp = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
    torch.testing.assert_close(out, expected, atol=ulp, rtol=ulp)
