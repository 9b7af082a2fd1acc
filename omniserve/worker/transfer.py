"""Host <-> device copies that never make the host wait for the device.

A plain `torch.tensor(values, device="cuda")` or `.to("cuda")` from pageable memory may wait for everything
queued on the stream: fatal to async scheduling, where the host builds step N+1 while step N runs. Here,
host data goes up through pinned memory with `non_blocking=True` (the caching host allocator keeps the
buffer alive until the copy is done), and device results come down into pinned buffers the same way; the
caller waits for them on a CUDA event only when it needs the values. On the CPU both are plain tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def to_device(
    values: np.ndarray | Sequence, device: torch.device, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """A device tensor of host values (a numpy array or a list), copied without a host sync."""
    host = torch.from_numpy(values) if isinstance(values, np.ndarray) else torch.tensor(values, dtype=dtype)
    if dtype is not None and host.dtype != dtype:
        host = host.to(dtype)
    if device.type != "cuda":
        return host
    return host.pin_memory().to(device, non_blocking=True)


def to_host_async(tensor: torch.Tensor) -> torch.Tensor:
    """Start copying a device tensor into a fresh pinned host tensor; valid once the stream got that far
    (record an event after this and wait on it before reading)."""
    if tensor.device.type != "cuda":
        return tensor
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    return host
