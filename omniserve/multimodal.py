"""Media items as they travel from the frontend to the engine core and the encoders.

The frontend turns each image / video / audio of a prompt into one `MediaItem`: its placeholder run in the
(expanded) prompt, a content hash (equal media -> equal hash -> shared encoder output and prefix-cache
blocks), and a `MediaPlan`: where the item's source lies (a file of the frontend's media store, or the
caller's own file) and the counts the frontend planned from headers alone. No pixels or samples travel
with the request: whoever encodes the item (an encoder worker, the engine's side-stream preprocessors, or
the engine itself in-process) decodes and preprocesses the source into the `EncoderInput` its tower takes
(`omniserve.encoders.media_prepare`), checks it against the plan, encodes it once into embedding pages of
the shared pool, and the model merges rows of those pages into the prefill chunks that cover the item's
placeholders (a chunk may start or end inside an item).

    prompt:  ... <|vision_bos|> [IMAGE x num_tokens] <|vision_eos|> ...
                                 ^offset        ^offset + num_tokens
    embedding row r of the item replaces the embedding of prompt token offset + r
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

MODALITIES = ("image", "video", "audio")


@dataclass
class EncoderInput:
    """Preprocessed tensors of one item (CPU, float32), exactly what the towers take."""

    modality: str  # "image" | "video" | "audio" | "video_with_audio"
    pixel_values: torch.Tensor | None = None  # [num_patches, C*T*P*P] (image, video)
    grid_thw: tuple[int, int, int] | None = None  # patches along t, h, w (image, video)
    features: torch.Tensor | None = None  # [num_mel_bins, L] log-mel (audio, audio in video)
    # Audio in video: the item's rows alternate between the two towers' outputs, in these runs:
    # ("video" | "audio", first row in that tower's output, number of rows).
    interleave: list[tuple[str, int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class StoredMedia:
    """One source of an item, as a file the preprocessor reads."""

    path: str  # absolute path
    kind: str  # "encoded": container bytes (image or video file, sniffed by the decoders);
    #            "array": an .npy of uint8 [H, W, 3] (image), uint8 [T, H, W, 3] (frames given as an array)
    #            or float32 [S] (audio, already decoded: mono at 16 kHz)


@dataclass(frozen=True)
class MediaPlan:
    """What the preprocessor must make of one item, decided by the frontend without decoding pixels.

    The counts are the frontend's (header sizes, demuxed frame counts, decoded audio lengths); the
    preprocessor fails the item when its decoded media disagree (e.g. a video whose container declares more
    frames than it holds), so the rows written always match the placeholders.
    """

    modality: str  # "image" | "video" | "audio" | "video_with_audio"
    source: StoredMedia  # image / video source; audio: the decoded waveform
    name: str  # "image 0": for error messages
    num_tokens: int  # rows the item must have (video + audio rows for video_with_audio)
    grid_thw: tuple[int, int, int] | None = None  # planned vision grid (image, video)
    audio_tokens: int = 0  # planned audio rows (audio, video_with_audio)
    audio: StoredMedia | None = None  # video_with_audio: the track, decoded (float32 [S] at 16 kHz)
    video_options: Any = None  # video: `omniserve.encoders.video_io.VideoOptions` to sample frames with
    max_image_pixels: int = 0  # image: the pixel cap (0: the decoder's default)
    interleave: tuple[tuple[str, int, int], ...] = ()  # video_with_audio: EncoderInput.interleave


@dataclass
class MediaItem:
    modality: str  # "image" | "video" | "audio" | "video_with_audio"
    content_hash: bytes  # 16-byte hash of the source and everything that shapes the embedding
    offset: int  # index of the first placeholder token in the prompt
    num_tokens: int  # placeholder tokens == embedding rows
    plan: MediaPlan  # how to make the item's tower inputs
    grid_thw: tuple[int, int, int] | None = None  # for M-RoPE (image, video)
    seconds_per_grid: float = 1.0  # for M-RoPE (video): seconds per temporal patch
    audio_tokens: int = 0  # for M-RoPE (audio, audio in video)

    @property
    def end(self) -> int:
        return self.offset + self.num_tokens
