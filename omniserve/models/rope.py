"""Rotary parameters from a checkpoint config: (inv_freq [D/2], attention scaling, M-RoPE sections).

transformers 5 keeps them in `config.rope_parameters` (`rope_type`, `rope_theta`, scaling fields,
`mrope_section`). Static rope types reuse transformers' frequency functions, so our tables equal theirs;
"dynamic" rescales with the sequence length at run time and is rejected.
"""

from __future__ import annotations

import torch


def rope_from_config(config, head_dim: int) -> tuple[torch.Tensor, float, list[int] | None]:
    params = dict(getattr(config, "rope_parameters", None) or {})
    rope_type = params.get("rope_type", params.get("type", "default"))
    mrope_section = params.get("mrope_section")
    if rope_type in ("default", "mrope"):
        theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
        rotary_dim = int(head_dim * params.get("partial_rotary_factor", 1.0))
        if rotary_dim != head_dim:
            raise ValueError("partial rotary embeddings are not supported")
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        scaling = 1.0
    elif rope_type == "dynamic":
        raise ValueError("rope_type 'dynamic' (sequence-length dependent) is not supported")
    else:
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        if rope_type not in ROPE_INIT_FUNCTIONS:
            raise ValueError(f"unknown rope_type {rope_type!r}")
        inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](config, "cpu")
    return inv_freq.float(), float(scaling), list(mrope_section) if mrope_section else None
