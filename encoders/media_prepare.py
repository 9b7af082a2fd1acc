"""`MediaPreparer`: a `MediaPlan` (where an item's source lies, what the frontend planned) -> the
`EncoderInput` its tower takes. Runs wherever items are encoded: in the encoder workers, in the
side-stream preprocess processes, or in the engine itself (in-process mode); never in the frontend.

    image  "encoded" file -> load_image (decode, EXIF, RGB) -> preprocess_image
           "array" .npy   ->                                  preprocess_image
    video  file or .npy frames -> load_video (sample at plan.video_options) -> preprocess_video
    audio  .npy waveform (decoded by the frontend: its length sets the rows) -> log_mel_spectrogram
    video_with_audio: the video as above + its track's .npy waveform -> features; rows interleaved

The result must match the plan (vision grid, audio tokens); otherwise the item fails with a `MediaError`
(e.g. a container that declares more frames than it holds, or a PNG whose EXIF orientation sits after its
pixel data), so the rows written always equal the placeholders the prompt was expanded to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omniserve.encoders.audio_features import (
    AudioFeatureConfig,
    load_audio_feature_config,
    log_mel_spectrogram,
)
from omniserve.encoders.image_io import DEFAULT_MAX_IMAGE_PIXELS, load_image
from omniserve.encoders.media_errors import MediaError
from omniserve.encoders.video_io import load_video
from omniserve.encoders.vision_config import (
    VisionPreprocessConfig,
    load_image_preprocess_config,
    load_video_preprocess_config,
)
from omniserve.encoders.vision_preprocess import preprocess_image, preprocess_video

from omniserve.multimodal import EncoderInput, MediaPlan, StoredMedia


def _load_array(stored: StoredMedia, name: str) -> np.ndarray:
    try:
        return np.load(stored.path, allow_pickle=False)
    except FileNotFoundError as error:
        raise MediaError("the media source is gone (its request finished)", item=name) from error
    except (OSError, ValueError) as error:
        raise MediaError(f"unreadable stored media ({error})", item=name) from error


@dataclass(frozen=True)
class MediaPreparer:
    image_config: VisionPreprocessConfig
    video_config: VisionPreprocessConfig
    audio_config: AudioFeatureConfig

    @classmethod
    def from_checkpoint(cls, model_path: str | Path) -> MediaPreparer:
        """The checkpoint's preprocessor configs (those `AutoProcessor.from_pretrained` reads)."""
        return cls(
            load_image_preprocess_config(model_path),
            load_video_preprocess_config(model_path),
            load_audio_feature_config(model_path),
        )

    def prepare(self, plan: MediaPlan) -> EncoderInput:
        """Decode and preprocess the item; MediaError when the media is unusable or is not as planned."""
        if plan.modality == "image":
            return self._image(plan)
        if plan.modality == "audio":
            features = self._features(plan.source, plan)
            return EncoderInput("audio", features=features)
        if plan.modality in ("video", "video_with_audio"):
            return self._video(plan)
        raise ValueError(f"unknown media modality {plan.modality!r}")

    def _image(self, plan: MediaPlan) -> EncoderInput:
        if plan.source.kind == "array":
            image = _load_array(plan.source, plan.name)
        else:
            max_pixels = plan.max_image_pixels or DEFAULT_MAX_IMAGE_PIXELS
            image = load_image(_existing(plan.source, plan.name), max_pixels=max_pixels, item=plan.name)
        inputs = preprocess_image(image, self.image_config, item=plan.name)
        _check("vision grid", inputs.grid_thw, plan.grid_thw, plan.name)
        return EncoderInput("image", pixel_values=inputs.pixel_values, grid_thw=inputs.grid_thw)

    def _features(self, stored: StoredMedia, plan: MediaPlan):
        waveform = _load_array(stored, plan.name)
        features = log_mel_spectrogram(waveform, self.audio_config, item=plan.name)
        _check("audio tokens", features.num_tokens, plan.audio_tokens, plan.name)
        return features.input_features

    def _video(self, plan: MediaPlan) -> EncoderInput:
        source = plan.source
        frames_source = (
            _load_array(source, plan.name) if source.kind == "array" else _existing(source, plan.name)
        )
        video = load_video(frames_source, plan.video_options, item=plan.name)
        inputs = preprocess_video(video.frames, self.video_config, item=plan.name)
        _check("vision grid", inputs.grid_thw, plan.grid_thw, plan.name)
        if plan.modality == "video":
            return EncoderInput("video", pixel_values=inputs.pixel_values, grid_thw=inputs.grid_thw)
        if plan.audio is None:
            raise ValueError(f"{plan.name}: a video_with_audio plan without its audio track")
        return EncoderInput(
            "video_with_audio",
            pixel_values=inputs.pixel_values,
            grid_thw=inputs.grid_thw,
            features=self._features(plan.audio, plan),
            interleave=list(plan.interleave),
        )


def _existing(stored: StoredMedia, name: str) -> str:
    if not Path(stored.path).is_file():
        raise MediaError("the media source is gone (its request finished)", item=name)
    return stored.path


def _check(what: str, got, planned, name: str) -> None:
    if got != planned:
        raise MediaError(
            f"the decoded media give {what} {got}, but its placeholders were planned from the headers for "
            f"{planned} (a container whose header disagrees with its data)",
            item=name,
        )
