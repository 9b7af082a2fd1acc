"""M-RoPE / TMRoPE position ids for a prompt with media (Qwen2-VL, Qwen2.5-VL, Qwen2.5-Omni thinker).

In: the prompt length and its media items with their placeholder ranges. Out: positions [3, N] (temporal,
height, width ids per token) and `delta`, so that a decoded token at sequence index i has position
i + delta on all three axes.

The rule (equal to transformers' `get_rope_index`, written over placeholder ranges instead of re-scanning
tokens): every text token takes `previous max + 1` on all three axes; a vision item places its merged grid at
base = previous max + 1:   t = base + frame * interval,  h = base + row,  w = base + column
(interval = position_id_per_seconds * seconds per temporal patch; images have one frame); an audio item takes
base, base + 1, ... on all axes. Audio inside a video (`use_audio_in_video`) is laid out as

    <vision_bos> <audio_bos> [video 0][audio 0][video 1][audio 1]... <audio_eos> <vision_eos>

where both bos tokens share one position, both eos tokens share one, and chunks cut the two streams every
`seconds_per_chunk` seconds of temporal position. After such an item, positions continue from the max of
its *last chunk* (which may be below the video's max): transformers does so, and the model was trained so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MRopeItem:
    kind: str  # "image" | "video" | "audio" | "video_with_audio"
    offset: int  # index of the item's first placeholder token in the prompt
    length: int  # placeholder tokens (for video_with_audio: video + audio tokens together)
    grid_thw: tuple[int, int, int] | None = None  # vision grid in patches (before merging)
    seconds_per_grid: float = 1.0  # seconds per temporal patch (video)
    audio_tokens: int = 0  # audio tokens (audio and video_with_audio)


@dataclass(frozen=True)
class MRopeConfig:
    spatial_merge_size: int = 2
    position_id_per_seconds: float = 25.0  # Qwen2.5-Omni; Qwen2.5-VL calls it vision tokens_per_second
    seconds_per_chunk: float = 2.0  # audio-in-video interleaving
    image_time_scale: float = 1.0  # Omni multiplies image frame indices by position_id_per_seconds too
    # Where text resumes after an image / video: "max" = previous max + 1 (Qwen2-VL, Qwen2.5-Omni);
    # "spatial" = item base + max(h', w') (transformers >= 5 for Qwen2.5-VL, whatever the time axis reached).
    continue_after_vision: str = "max"


def _vision_positions(grid_thw: tuple[int, int, int], t_index: np.ndarray, merge: int) -> np.ndarray:
    """[3, t * h' * w'] offsets (before adding the base) in placeholder order: frame-major, then rows."""
    grid_t, grid_h, grid_w = grid_thw
    h, w = grid_h // merge, grid_w // merge
    t_ids = np.repeat(t_index, h * w)
    h_ids = np.tile(np.repeat(np.arange(h), w), grid_t)
    w_ids = np.tile(np.arange(w), grid_t * h)
    return np.stack([t_ids, h_ids, w_ids])


def _chunks(temporal: np.ndarray, base: int, tokens_per_chunk: int) -> list[tuple[int, int]]:
    """Split a non-decreasing run of temporal ids into [start, end) slices, one per chunk of time."""
    bounds, start, chunk = [], 0, 1
    for i, value in enumerate(temporal):
        if value - base >= chunk * tokens_per_chunk:
            bounds.append((start, i))
            start, chunk = i, chunk + 1
    bounds.append((start, len(temporal)))
    return bounds


def mrope_positions(num_tokens: int, items: list[MRopeItem], config: MRopeConfig) -> tuple[np.ndarray, int]:
    positions = np.zeros((3, num_tokens), dtype=np.int64)
    merge = config.spatial_merge_size
    cursor = 0  # next token index to place
    next_pos = 0  # previous max + 1

    def text_until(end: int) -> None:
        nonlocal cursor, next_pos
        count = end - cursor
        if count > 0:
            positions[:, cursor:end] = next_pos + np.arange(count)
            next_pos += count
            cursor = end

    for item in sorted(items, key=lambda it: it.offset):
        if item.kind == "video_with_audio":
            text_until(item.offset - 2)
            positions[:, cursor : cursor + 2] = next_pos  # vision_bos and audio_bos share a position
            cursor += 2
            next_pos += 1
        else:
            text_until(item.offset)
        base = next_pos
        last_part = None  # transformers continues from the max of the last piece it appended
        if item.kind == "audio":
            block = base + np.broadcast_to(np.arange(item.length), (3, item.length))
        else:
            assert item.grid_thw is not None, f"{item.kind} item needs grid_thw"
            frames = np.arange(item.grid_thw[0])
            if item.kind == "image":
                t_index = (frames * config.image_time_scale * config.position_id_per_seconds).astype(np.int64)
            else:
                t_index = (frames * float(item.seconds_per_grid) * config.position_id_per_seconds).astype(
                    np.int64
                )
            video = base + _vision_positions(item.grid_thw, t_index, merge)
            if item.kind == "video_with_audio":
                audio = base + np.broadcast_to(np.arange(item.audio_tokens), (3, item.audio_tokens))
                per_chunk = int(config.position_id_per_seconds * config.seconds_per_chunk)
                video_chunks = _chunks(video[0], base, per_chunk)
                audio_chunks = _chunks(audio[0], base, per_chunk)
                parts = []
                for j in range(max(len(video_chunks), len(audio_chunks))):
                    if j < len(video_chunks):
                        parts.append(video[:, slice(*video_chunks[j])])
                    if j < len(audio_chunks):
                        parts.append(audio[:, slice(*audio_chunks[j])])
                block = np.concatenate(parts, axis=1)
                last_part = parts[-1]
            else:
                block = video
        if block.shape[1] != item.length:
            raise ValueError(
                f"{item.kind} item at {item.offset} has {item.length} placeholder tokens but its "
                f"grid / audio length gives {block.shape[1]}"
            )
        positions[:, cursor : cursor + item.length] = block
        cursor += item.length
        if item.length:
            next_pos = int((block if last_part is None else last_part).max()) + 1
            if config.continue_after_vision == "spatial" and item.kind in ("image", "video"):
                next_pos = base + max(item.grid_thw[1], item.grid_thw[2]) // merge
        if item.kind == "video_with_audio":
            positions[:, cursor : cursor + 2] = next_pos  # audio_eos and vision_eos share a position
            cursor += 2
            next_pos += 1
    text_until(num_tokens)
    delta = (int(positions.max()) + 1 - num_tokens) if num_tokens else 0
    return positions, delta
