"""Reference construction that works on every transformers version our tests meet (5.17 on the GPU host, 5.24
here). The Qwen2.5-Omni/VL model math is the same in both (bit-identical logits on the parity cases); what
differs is how the processor is asked for things, so the tests feature-detect it here instead of pinning."""

from __future__ import annotations

from typing import Any

import torch


def audio_in_video_kwargs(processor, audio_from_video_indices: list[int | None]) -> dict[str, Any]:
    """Processor kwargs that interleave each video with its audio track, `audio` being in slot order.

    Newer processors (OmniModalProcessorMixin, 5.2x) take `load_audio_from_video` plus
    `audio_from_video_indices` (None = standalone audio, i = the track of videos[i]); they reject the older
    `use_audio_in_video` when standalone audio is mixed in. Older ones (5.17) silently ignore those two
    kwargs and want `use_audio_in_video=True`, which pairs every video with the next audio in text order
    (the slot order of the tests' `audio` lists).
    """
    if hasattr(processor, "load_audio_from_video"):
        return {"audio_from_video_indices": list(audio_from_video_indices), "load_audio_from_video": True}
    tracks = [index for index in audio_from_video_indices if index is not None]
    if tracks != list(range(len(tracks))):
        raise ValueError(
            "this transformers version pairs every video, in order, with the next audio in the text "
            "(use_audio_in_video); it cannot build a reference for other audio/video layouts"
        )
    return {"use_audio_in_video": True}


def audio_encoder_output_lengths(mel_frames: torch.Tensor) -> torch.Tensor:
    """Audio tokens per number of mel frames, by the Qwen2.5-Omni audio encoder's own formula (the
    processor-level `_get_feat_extract_output_lengths` exists only in newer versions)."""
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniAudioEncoder

    return Qwen2_5OmniAudioEncoder._get_feat_extract_output_lengths(None, mel_frames)[1]


def vision_size(min_pixels: int, max_pixels: int) -> dict[str, int]:
    """`size=` for Qwen2VL image/video processors. Passing `min_pixels=`/`max_pixels=` to their constructors
    in 5.17 writes into the class-level default `size` dict, so every later default-built processor in the
    process inherits those bounds (fixed by 5.24); a fresh `size` dict leaves the defaults alone."""
    return {"shortest_edge": min_pixels, "longest_edge": max_pixels}
