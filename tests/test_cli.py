"""`omniserve generate` end to end in a subprocess, on the built-in demo model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from omniserve.checkout_path import CHECKOUT_ROOT, is_checkout_root, without_checkout_root


def run_cli(*args: str, env_dir: str, cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMNISERVE_CACHE_DIR=env_dir)
    return subprocess.run(
        [sys.executable, "-m", "omniserve", *args], capture_output=True, text=True, env=env, timeout=300,
        cwd=cwd or env_dir,
    )


def test_generate_on_the_demo_model(tmp_path) -> None:
    """Run from the checkout's root, where `python -m` would make our kernels/ the top-level `kernels` that
    transformers >= 5.25 imports (omniserve/checkout_path.py)."""
    result = run_cli(
        "generate",
        "Hello there",
        "--max-tokens",
        "6",
        "--ignore-eos",
        "--no-stream",
        "--block-size",
        "8",
        env_dir=str(tmp_path),
        cwd=CHECKOUT_ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "### Hello there" in result.stdout
    assert "[6 tokens, finish_reason=length]" in result.stdout
    assert (tmp_path / "demo").is_dir()  # the demo checkpoint was built into the cache


def test_generate_reports_bad_input_without_a_traceback(tmp_path) -> None:
    result = run_cli("generate", "hi", "--temperature", "-1", env_dir=str(tmp_path))
    assert result.returncode == 2
    assert "temperature" in result.stderr and "Traceback" not in result.stderr


def test_checkout_root_leaves_the_import_path(tmp_path, monkeypatch) -> None:
    assert is_checkout_root(CHECKOUT_ROOT)
    assert not is_checkout_root(tmp_path)
    monkeypatch.chdir(CHECKOUT_ROOT)
    path = ["", str(CHECKOUT_ROOT), str(tmp_path), str(tmp_path / "missing"), "/no/such.zip"]
    assert without_checkout_root(path) == [str(tmp_path), str(tmp_path / "missing"), "/no/such.zip"]
    monkeypatch.chdir(tmp_path)  # '' is now another folder: kept
    assert without_checkout_root(["", str(CHECKOUT_ROOT)]) == [""]
    assert without_checkout_root(["", str(tmp_path)], root=tmp_path) == ["", str(tmp_path)]  # no checkout
