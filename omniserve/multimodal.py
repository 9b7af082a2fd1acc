"""Media items as they travel from the frontend to the engine core and the encoders.

The frontend turns each image / video / audio of a prompt into one `MediaItem`: its placeholder run in the
(expanded) prompt, a content hash (equal media -> equal hash -> shared encoder output and prefix-cache
blocks), and the preprocessed `EncoderInput` its tower needs. The engine core encodes an item once, into
embedding pages of the shared pool, and the model merges rows of those pages into the prefill chunks that
cover the item's placeholders (a chunk may start or end inside an item).

    prompt:  ... <|vision_bos|> [IMAGE x num_tokens] <|vision_eos|> ...
                                 ^offset        ^offset + num_tokens
    embedding row r of the item replaces the embedding of prompt token offset + r
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class MediaItem:
    modality: str  # "image" | "video" | "audio" | "video_with_audio"
    content_hash: bytes  # 16-byte hash of the source and everything that shapes the embedding
    offset: int  # index of the first placeholder token in the prompt
    num_tokens: int  # placeholder tokens == embedding rows
    encoder_input: EncoderInput | None  # None once encoded (the engine drops it)
    grid_thw: tuple[int, int, int] | None = None  # for M-RoPE (image, video)
    seconds_per_grid: float = 1.0  # for M-RoPE (video): seconds per temporal patch
    audio_tokens: int = 0  # for M-RoPE (audio, audio in video)

    @property
    def end(self) -> int:
        return self.offset + self.num_tokens
