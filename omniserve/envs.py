"""Every environment variable omniserve reads, in one place.

| variable | meaning | default |
| --- | --- | --- |
| OMNISERVE_CACHE_DIR | cache of the built-in demo checkpoint and uploads | ~/.cache/omniserve |
| OMNISERVE_LOG_LEVEL | logging level of the `omniserve` logger | INFO |
| OMNISERVE_MEDIA_DIR | parent folder of the frontend's media store (sources encoders read) | temp dir |
| OMNISERVE_SKINNY_GEMM | 0: cuBLAS for every projection (no Triton GEMM for decode-sized batches) | 1 |
| OMNISERVE_PDL | 0: no programmatic dependent launch for decode-sized Triton launches (kernels/pdl.py) | 1 |
| TRITON_INTERPRET | read by Triton itself: 1 runs kernels in the numpy interpreter (CPU tests) | unset |
| OMP_NUM_THREADS | read by torch; unset: a CPU engine process uses all cores but one | unset |
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    explicit = os.environ.get("OMNISERVE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "omniserve"


def media_dir() -> str | None:
    return os.environ.get("OMNISERVE_MEDIA_DIR") or None


def log_level() -> str:
    return os.environ.get("OMNISERVE_LOG_LEVEL", "INFO").upper()


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def omp_num_threads() -> int | None:
    value = os.environ.get("OMP_NUM_THREADS")
    return int(value) if value and value.isdigit() else None


def skinny_gemm() -> bool:
    return os.environ.get("OMNISERVE_SKINNY_GEMM", "1") != "0"


def pdl() -> bool:
    return os.environ.get("OMNISERVE_PDL", "1") != "0"
