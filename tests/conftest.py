"""Shared fixtures: tiny Qwen2 checkpoints built once per session (transformers classes, random weights)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/factories.py

# Without CUDA the Triton kernels run in the interpreter. Triton reads TRITON_INTERPRET when a kernel module
# is imported, and any test folder may import one first, so it is set here, before anything is collected.
if os.environ.get("TRITON_INTERPRET") is None and not __import__("torch").cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Never touch the user's cache: the demo model and uploads go to a temp dir."""
    if "OMNISERVE_CACHE_DIR" not in os.environ or os.environ.get("CI"):
        os.environ["OMNISERVE_CACHE_DIR"] = str(tmp_path_factory.mktemp("omniserve-cache"))


@pytest.fixture(scope="session")
def checkpoint_factory(tmp_path_factory: pytest.TempPathFactory):
    """checkpoint_factory(name, **build_qwen2_checkpoint kwargs) -> folder, built once per session."""
    from omniserve.demo import build_qwen2_checkpoint

    built: dict[str, Path] = {}

    def make(name: str, **kwargs) -> Path:
        if name not in built:
            built[name] = build_qwen2_checkpoint(tmp_path_factory.mktemp(name) / "ckpt", **kwargs)
        return built[name]

    return make
