"""Copying HF checkpoint tensors into an encoder tower by name, with one complete error at the end.

In: `(checkpoint name, tensor)` pairs (any order, any float dtype) and the tower's prefix (`thinker.visual.`,
`visual.`, `thinker.audio_tower.`). Names outside the prefix are skipped by the tower; it maps the rest to
its parameter names (and the row shard of a fused `StackedLinear`, if any). Out: the tower's parameters
filled, or a ValueError that lists every unknown, misshaped and missing tensor, named as in the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from omniserve.models.layers import StackedLinear

_SHOWN = 8  # names listed per kind of problem


def _default_checkpoint_name(param: str, shard: str | None) -> str:
    return param if shard is None else f"{param}#{shard}"


class CheckpointCopier:
    """Tracks which parameters (and fused shards) a checkpoint filled. Use: `copy()` or `unknown()` per
    tensor under the prefix, then `finish()`, which raises if anything was wrong or is still missing."""

    def __init__(
        self, module: nn.Module, prefix: str,
        checkpoint_name: Callable[[str, str | None], str] = _default_checkpoint_name,
    ) -> None:
        self.module = module
        self.prefix = prefix
        # (parameter, shard or None for all of it) -> checkpoint name(s) that fill it, for error messages
        self.checkpoint_name = checkpoint_name
        self.params = dict(module.named_parameters())
        # "param" or "param#shard" that must be filled
        self.expected: set[str] = set()
        for module_name, child in module.named_modules():
            for param_name, _ in child.named_parameters(recurse=False):
                full = f"{module_name}.{param_name}" if module_name else param_name
                self.expected.update(self._keys(full))
        self.loaded: set[str] = set()
        self.misshaped_keys: set[str] = set()  # reported as misshaped, so not again as missing
        self.unknown_names: list[str] = []
        self.misshaped: list[str] = []

    def copy(
        self, checkpoint_name: str, param_name: str, tensor: torch.Tensor, shard: str | None = None,
        reshape_to_param: bool = False,
    ) -> None:
        """Copies `tensor` into parameter `param_name` (into the rows of `shard` of a fused layer). With
        `reshape_to_param`, a tensor with as many elements is reshaped first (conv weight into a linear)."""
        param = self.params.get(param_name)
        if param is None:
            self.unknown(checkpoint_name)
            return
        if shard is None:
            target, keys = param, self._keys(param_name)
        else:
            start, size = self._owner(param_name).shard_offsets[shard]
            target, keys = param[start : start + size], [f"{param_name}#{shard}"]
        if reshape_to_param and tensor.numel() == target.numel():
            tensor = tensor.reshape(target.shape)
        if tensor.shape != target.shape:
            self.misshaped.append(f"{checkpoint_name} {tuple(tensor.shape)} (expected {tuple(target.shape)})")
            self.misshaped_keys.update(keys)
            return
        with torch.no_grad():
            target.copy_(tensor)
        self.loaded.update(keys)

    def unknown(self, checkpoint_name: str) -> None:
        self.unknown_names.append(checkpoint_name)

    def finish(self) -> None:
        missing = self._missing_checkpoint_names()
        problems = []
        if self.unknown_names:
            problems.append(f"{len(self.unknown_names)} unknown tensors {self.unknown_names[:_SHOWN]}")
        if self.misshaped:
            problems.append(f"{len(self.misshaped)} misshaped tensors {self.misshaped[:_SHOWN]}")
        if missing:
            problems.append(f"{len(missing)} missing tensors {missing[:_SHOWN]}")
        if problems:
            raise ValueError(f"checkpoint does not fit {type(self.module).__name__} under prefix "
                             f"{self.prefix!r}: " + "; ".join(problems))

    def _missing_checkpoint_names(self) -> list[str]:
        """One name for a parameter none of whose shards came, else one per missing shard."""
        shards_missing: dict[str, list[str]] = {}
        for key in sorted(self.expected - self.loaded - self.misshaped_keys):
            param, _, shard = key.partition("#")
            shards_missing.setdefault(param, []).append(shard)
        names = []
        for param, shards in shards_missing.items():
            if len(shards) == len(self._keys(param)):
                names.append(self.prefix + self.checkpoint_name(param, None))
            else:
                names += [self.prefix + self.checkpoint_name(param, shard) for shard in shards]
        return names

    def _owner(self, param_name: str) -> nn.Module:
        return self.module.get_submodule(param_name.rpartition(".")[0])

    def _keys(self, param_name: str) -> list[str]:
        """A fused layer's parameter is filled shard by shard (or whole, as Qwen2.5-VL's `qkv`)."""
        owner = self._owner(param_name)
        if isinstance(owner, StackedLinear):
            return [f"{param_name}#{shard}" for shard in owner.shard_offsets]
        return [param_name]
