"""`python -m omniserve` from the root of an omniserve checkout: keep that folder off the import path.

`python -m` puts the working directory first on sys.path. In the checkout's root that makes our `kernels/`
folder importable as a top-level `kernels`, which is the name of a PyPI package that transformers >= 5.25
imports (`from kernels import CUDAProperties`): loading a model then fails. omniserve itself never needs the
root on the path once installed (its folders install as `omniserve.*`), so `omniserve/__main__.py` drops it.
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKOUT_ROOT = Path(__file__).resolve().parents[1]


def is_checkout_root(folder: Path) -> bool:
    """A source checkout's root (an editable install), never site-packages: it holds our kernels/ sources."""
    kernel_source = folder / "kernels" / "paged_attention_triton.py"
    return (folder / "pyproject.toml").is_file() and kernel_source.is_file()


def without_checkout_root(path: list[str], root: Path = CHECKOUT_ROOT) -> list[str]:
    """`path` (sys.path) less the entries that name the checkout's root ('' is the working directory)."""
    if not is_checkout_root(root):
        return list(path)
    kept = []
    for entry in path:
        try:
            same = os.path.samefile(entry or os.curdir, root)
        except OSError:  # a missing folder or a zip on the path
            same = False
        if not same:
            kept.append(entry)
    return kept
