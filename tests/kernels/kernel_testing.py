"""Shared helpers of the kernel tests (conftest.py has already chosen interpreter or GPU)."""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

ON_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
# bf16 only when compiled: the interpreter's bf16 tl.dot returns garbage
DTYPES = [torch.float32, torch.float16, torch.bfloat16] if ON_GPU else [torch.float32, torch.float16]
# (atol, rtol) against an fp32 reference computed from the same (rounded) inputs
TOLERANCE = {torch.float32: (1e-4, 1e-4), torch.float16: (4e-3, 4e-3), torch.bfloat16: (3e-2, 3e-2)}


def import_kernel(name: str) -> ModuleType:
    """`omniserve.kernels.<name>` when installed, else `kernels.<name>` from the repository root."""
    try:
        return importlib.import_module(f"omniserve.kernels.{name}")
    except ModuleNotFoundError as error:
        if error.name not in ("omniserve.kernels", f"omniserve.kernels.{name}", "omniserve"):
            raise
        return importlib.import_module(f"kernels.{name}")


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    """NaN anywhere fails (outputs are poisoned with NaN before the kernel runs)."""
    atol, rtol = TOLERANCE[dtype]
    assert not actual.isnan().any(), "unwritten (NaN-poisoned) or NaN output elements"
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol)


def projection_inputs(m: int, n: int, k: int, dtype: torch.dtype, seed: int, column_offset: int):
    """x [m, k] with strided rows (a view at `column_offset` into [m, k + 8]), weight [n, k], bias [n]."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k + 8, generator=gen)[:, column_offset:column_offset + k]
    weight = torch.randn(n, k, generator=gen) / k**0.5
    bias = torch.randn(n, generator=gen)
    return x.to(dtype).to(DEVICE), weight.to(dtype).to(DEVICE), bias.to(dtype).to(DEVICE)


def silu_mul_expected(x: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """silu(x W_g^T) * (x W_u^T) in fp32 from the same rounded inputs; below fp32 the [M, 2I] intermediate is
    rounded to dtype first, as the unfused path (GEMM, then silu_and_mul) does."""
    reference = import_kernel("linear")
    if dtype == torch.float32:
        return reference.linear_silu_mul_torch(x.float(), weight.float())
    gate_up = reference.linear_torch(x.float(), weight.float()).to(dtype)
    inter = weight.shape[0] // 2
    return torch.nn.functional.silu(gate_up[:, :inter]) * gate_up[:, inter:]


def check_projection(kernel, shape, dtype, with_bias: bool, config, column_offset: int) -> None:
    """kernel(x, weight, bias, config=, out=) [M, N] against `linear_torch` (output NaN-poisoned first)."""
    m, n, k = shape
    x, weight, bias = projection_inputs(m, n, k, dtype, seed=m * n + k, column_offset=column_offset)
    bias = bias if with_bias else None
    reference = import_kernel("linear")
    expected = reference.linear_torch(x.float(), weight.float(), None if bias is None else bias.float())
    out = torch.full((m, n), float("nan"), dtype=dtype, device=DEVICE)
    result = kernel(x, weight, bias, config=config, out=out)
    assert result.data_ptr() == out.data_ptr() and result.dtype == dtype
    assert_close(result, expected, dtype)


def check_gated_projection(kernel, shape, dtype, config, column_offset: int) -> None:
    """kernel(x, weight [2I, K], config=, out=) [M, I] against `silu_mul_expected`."""
    m, inter, k = shape
    x, weight, _ = projection_inputs(m, 2 * inter, k, dtype, seed=m + inter * k, column_offset=column_offset)
    out = torch.full((m, inter), float("nan"), dtype=dtype, device=DEVICE)
    result = kernel(x, weight, config=config, out=out)
    assert result.shape == (m, inter)
    assert_close(result, silu_mul_expected(x, weight, dtype), dtype)
