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
