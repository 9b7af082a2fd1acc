"""`omniserve generate` end to end in a subprocess, on the built-in demo model."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*args: str, env_dir: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMNISERVE_CACHE_DIR=env_dir)
    return subprocess.run(
        [sys.executable, "-m", "omniserve", *args], capture_output=True, text=True, env=env, timeout=300,
        cwd=env_dir,  # outside the checkout: see tests/server_harness.py
    )


def test_generate_on_the_demo_model(tmp_path) -> None:
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
    )
    assert result.returncode == 0, result.stderr
    assert "### Hello there" in result.stdout
    assert "[6 tokens, finish_reason=length]" in result.stdout
    assert (tmp_path / "demo").is_dir()  # the demo checkpoint was built into the cache


def test_generate_reports_bad_input_without_a_traceback(tmp_path) -> None:
    result = run_cli("generate", "hi", "--temperature", "-1", env_dir=str(tmp_path))
    assert result.returncode == 2
    assert "temperature" in result.stderr and "Traceback" not in result.stderr
