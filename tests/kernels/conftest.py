"""Kernel tests: each Triton kernel against its plain-torch reference.

Without CUDA the kernels run in Triton's numpy interpreter: TRITON_INTERPRET must be set before triton is
imported and before `@triton.jit` runs on the kernel modules, so it is set here, at import time, before
any test module of this folder imports a kernel. With CUDA the
same tests run compiled (and also in bf16, whose `tl.dot` the interpreter gets wrong).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ON_GPU = torch.cuda.is_available()
if not ON_GPU:
    os.environ["TRITON_INTERPRET"] = "1"

# The kernels import as `omniserve.kernels` once installed, as `kernels` from the repository root.
_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:
    sys.path.append(_REPO_ROOT)


if not ON_GPU:
    try:  # installed: transformers >= 5.25 imports the `kernels` package of PyPI, so ours is not `kernels`
        from omniserve.kernels.interpreter import patch_triton_interpreter
    except ModuleNotFoundError as error:
        if error.name not in ("omniserve", "omniserve.kernels", "omniserve.kernels.interpreter"):
            raise
        from kernels.interpreter import patch_triton_interpreter

    patch_triton_interpreter()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    here = Path(__file__).parent
    for item in items:
        if "gpu" in item.keywords and not ON_GPU and here in Path(str(item.fspath)).parents:
            item.add_marker(skip_gpu)
