"""`MediaLimits`: how much media one prompt may carry. Checked by the frontend before and while decoding."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MediaLimits:
    """What one prompt may carry; anything over a limit is a ValueError naming the item."""

    max_items: int = 32  # media items per prompt, all modalities together
    max_image_pixels: int = 50_000_000  # width * height of a stored image (before resizing), 50 MP
    max_video_frames: int = 768  # frames of a video after fps sampling (the frames the tower sees)
    max_video_seconds: float = 600.0  # duration of a video (declared, or frames / fps for frame arrays)
    max_audio_seconds: float = 600.0  # duration of an audio item or of a video's audio track

    def __post_init__(self) -> None:
        for name in (
            "max_items",
            "max_image_pixels",
            "max_video_frames",
            "max_video_seconds",
            "max_audio_seconds",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"MediaLimits.{name} must be positive, got {getattr(self, name)!r}")
