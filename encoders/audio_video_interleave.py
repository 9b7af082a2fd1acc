"""Placeholder layout of a video with its audio track (Qwen2.5-Omni `use_audio_in_video`).

In: the video's grid (t, h, w) in patches, merge_size, second_per_grid, and the audio track's token count.
Out: the runs of placeholder tokens that replace one `<|VIDEO|>` in the prompt, in order. transformers
5.24 (`Qwen2_5OmniProcessor.replace_video_with_audio_token`) writes
    <|audio_bos|> video run 0, audio run 0, video run 1, audio run 1, ... <|audio_eos|>
where video token k (temporal patch t_k) sits at position id t_k * second_per_grid * 25, audio token j at
j, and runs cut those ids into windows of seconds_per_chunk * 25 (= 50) ids; a side with fewer windows
just stops. The totals are the plain video and audio counts: interleaving only reorders them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POSITION_ID_PER_SECONDS = 25  # Qwen2_5OmniProcessor.position_id_per_seconds (thinker config: same)
SECONDS_PER_CHUNK = 2.0  # Qwen2_5OmniProcessor.seconds_per_chunk


@dataclass(frozen=True)
class PlaceholderRun:
    modality: str  # "video" or "audio": which placeholder token the run repeats
    count: int  # consecutive placeholder tokens in the run (> 0); adjacent runs differ in modality


def chunk_bounds(position_ids: np.ndarray, ids_per_chunk: int) -> list[tuple[int, int]]:
    """[start, end) index ranges of non-decreasing `position_ids` cut at multiples of ids_per_chunk,
    exactly as HF's `get_chunked_index` (which advances one window per cut, even over a gap)."""
    bounds, start, window = [], 0, 1
    for index, value in enumerate(position_ids.tolist()):
        if value >= window * ids_per_chunk:
            bounds.append((start, index))
            start, window = index, window + 1
    bounds.append((start, len(position_ids)))
    return bounds


def audio_in_video_runs(
    grid_thw: tuple[int, int, int],
    merge_size: int,
    second_per_grid: float,
    num_audio_tokens: int,
    *,
    position_id_per_seconds: float = POSITION_ID_PER_SECONDS,
    seconds_per_chunk: float = SECONDS_PER_CHUNK,
) -> list[PlaceholderRun]:
    """The video/audio runs between <|audio_bos|> and <|audio_eos|> (see module doc)."""
    grid_t, grid_h, grid_w = grid_thw
    tokens_per_frame = (grid_h // merge_size) * (grid_w // merge_size)
    video_ids = np.repeat(np.arange(grid_t), tokens_per_frame) * second_per_grid * position_id_per_seconds
    audio_ids = np.arange(num_audio_tokens)
    ids_per_chunk = int(position_id_per_seconds * seconds_per_chunk)
    video_chunks = chunk_bounds(video_ids, ids_per_chunk)
    audio_chunks = chunk_bounds(audio_ids, ids_per_chunk)
    runs: list[PlaceholderRun] = []
    for index in range(max(len(video_chunks), len(audio_chunks))):
        for modality, chunks in (("video", video_chunks), ("audio", audio_chunks)):
            if index >= len(chunks) or chunks[index][1] == chunks[index][0]:
                continue
            count = chunks[index][1] - chunks[index][0]
            if runs and runs[-1].modality == modality:  # adjacent windows of one side: one run
                count += runs.pop().count
            runs.append(PlaceholderRun(modality, count))
    return runs
