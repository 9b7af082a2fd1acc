"""Tiny Qwen2.5-Omni (thinker only) and Qwen2.5-VL checkpoints for the encoder tower parity tests.

Built with transformers' own classes, weights re-drawn at a scale where attention is peaked (random init at
std 0.02 gives near-uniform attention, which would hide window, chunk and rotary mistakes), saved with
`save_pretrained`. The in-memory transformers model is the reference; our towers load the saved files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from omniserve.models.loader import iterate_safetensors

# head_dim 16 (divisible by 4 for the 2-D rotary); blocks 1 and 3 attend over whole frames
VISION = dict(
    depth=4,
    hidden_size=32,
    intermediate_size=48,
    num_heads=2,
    out_hidden_size=64,
    patch_size=14,
    temporal_patch_size=2,
    spatial_merge_size=2,
    window_size=112,
    fullatt_block_indexes=[1, 3],
)
AUDIO = dict(
    num_mel_bins=128,
    encoder_layers=2,
    encoder_attention_heads=2,
    encoder_ffn_dim=48,
    d_model=32,
    n_window=100,
    max_source_positions=1500,
    output_dim=64,
)
TEXT = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=1,
    num_attention_heads=4,
    num_key_value_heads=2,
    rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
)


@dataclass
class TinyCheckpoint:
    model: nn.Module  # transformers' model, eval mode, fp32: the reference
    path: Path  # folder written by save_pretrained
    weights: dict[str, torch.Tensor]  # every tensor of the saved safetensors, by checkpoint name


def omni_tower(model: nn.Module, name: str) -> nn.Module:
    """The thinker's `visual` or `audio_tower`: at thinker.model.<name> in transformers 5.24, at
    thinker.<name> in 5.17 (the saved names are thinker.<name>.* in both)."""
    thinker = model.thinker
    return getattr(thinker.model, name, None) or getattr(thinker, name)


def vision_reference(checkpoint: TinyCheckpoint) -> nn.Module:
    """transformers' vision tower inside the Omni or Qwen2.5-VL model."""
    if hasattr(checkpoint.model, "thinker"):
        return omni_tower(checkpoint.model, "visual")
    return checkpoint.model.model.visual


def spread_weights(module: nn.Module, seed: int) -> None:
    """Peaked-attention weights, seeded (the demo builder's `spread_weights`)."""
    from omniserve.demo_omni import spread_weights as spread

    spread(module, torch.Generator().manual_seed(seed))


def _save(model: nn.Module, folder: Path) -> TinyCheckpoint:
    model.eval().save_pretrained(folder)
    return TinyCheckpoint(model, folder, dict(iterate_safetensors(folder)))


def build_tiny_omni(folder: Path) -> TinyCheckpoint:
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration
    from transformers.utils import logging

    logging.set_verbosity_error()  # default token ids outside the tiny vocabulary warn; irrelevant here
    torch.manual_seed(0)
    config = Qwen2_5OmniConfig(
        thinker_config=dict(text_config=TEXT, vision_config=VISION, audio_config=AUDIO),
        enable_audio_output=False,  # no talker / token2wav: the towers are all we need
    )
    model = Qwen2_5OmniForConditionalGeneration(config)
    spread_weights(omni_tower(model, "visual"), seed=1)
    spread_weights(omni_tower(model, "audio_tower"), seed=2)
    return _save(model, folder)


def build_tiny_qwen2_5_vl(folder: Path) -> TinyCheckpoint:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=TEXT, vision_config=VISION))
    spread_weights(model.model.visual, seed=3)
    return _save(model, folder)


def max_abs_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    return (actual.float() - expected.float()).abs().max().item() if actual.numel() else 0.0
