"""One media item -> the tensors its tower takes, its placeholder count and its content hash.

In: a `MediaInput` (source as given), `MediaOptions` (fps, use_audio_in_video) and the checkpoint's
preprocessing configs (read once, equal to what `AutoProcessor.from_pretrained` uses). Out: `LoadedMedia`.
Decoding and preprocessing are the `omniserve.encoders` library's; this module applies `MediaLimits`,
the family's video time convention and the audio-in-video layout. Every failure is a `MediaError` (a
ValueError) naming the item ("video 1: ...").

Audio in video (Qwen2.5-Omni, `use_audio_in_video`): the item's rows are the video tower's rows and the
audio tower's rows, interleaved in the order `audio_in_video_runs` gives (per 2 s chunk: that chunk's video
tokens, then its audio tokens); `EncoderInput.interleave` lists the runs as (tower, first row, count).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from omniserve.encoders.audio_features import load_audio_feature_config, log_mel_spectrogram
from omniserve.encoders.audio_io import load_audio
from omniserve.encoders.audio_video_interleave import PlaceholderRun, audio_in_video_runs
from omniserve.encoders.image_io import load_image
from omniserve.encoders.media_errors import MediaError
from omniserve.encoders.video_io import DEFAULT_VIDEO_FPS, DecodedVideo, VideoOptions, load_video
from omniserve.encoders.vision_config import load_image_preprocess_config, load_video_preprocess_config
from omniserve.encoders.vision_preprocess import preprocess_image, preprocess_video
from omniserve.frontend.media_hash import content_hash
from omniserve.frontend.media_limits import MediaLimits
from omniserve.frontend.mm_family import MultimodalFamily
from omniserve.frontend.mm_inputs import MediaInput, MediaOptions
from omniserve.multimodal import EncoderInput


@dataclass
class LoadedMedia:
    modality: str  # "image" | "video" | "audio" | "video_with_audio"
    encoder_input: EncoderInput  # CPU float32 tensors for the tower(s)
    num_tokens: int  # placeholder tokens == embedding rows (video + audio tokens for video_with_audio)
    content_hash: bytes  # 16 bytes, see media_hash
    grid_thw: tuple[int, int, int] | None = None  # vision grid in patches (image, video)
    seconds_per_grid: float = 1.0  # seconds per temporal patch (video)
    audio_tokens: int = 0  # audio rows (audio, video_with_audio)
    runs: list[PlaceholderRun] = field(default_factory=list)  # video_with_audio: placeholder layout


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) or type(value).__name__ == "Tensor"


class MediaLoader:
    def __init__(self, model_path: str | Path, family: MultimodalFamily, limits: MediaLimits) -> None:
        self.family = family
        self.limits = limits
        self.image_config = load_image_preprocess_config(model_path)
        self.video_config = load_video_preprocess_config(model_path)
        self.audio_config = load_audio_feature_config(model_path)

    def load(self, media: MediaInput, options: MediaOptions) -> LoadedMedia:
        if media.modality == "image":
            return self._image(media)
        if media.modality == "audio":
            return self._audio(media)
        return self._video(media, options)

    def _fingerprint(self, *parts: Any) -> str:
        return repr((self.family.model_type, *parts))

    def _image(self, media: MediaInput) -> LoadedMedia:
        source, name = media.source, media.name
        if _is_array(source):
            array = np.asarray(source)
            if array.ndim == 3 and array.shape[0] * array.shape[1] > self.limits.max_image_pixels:
                raise MediaError(
                    f"image has {array.shape[1]}x{array.shape[0]} pixels, over the limit of "
                    f"{self.limits.max_image_pixels}",
                    item=name,
                )
            image: Image.Image | np.ndarray = array
        else:
            image = load_image(source, max_pixels=self.limits.max_image_pixels, item=name)
        inputs = preprocess_image(image, self.image_config, item=name)
        digest = content_hash("image", [source], self._fingerprint(self.image_config), item=name)
        encoder_input = EncoderInput("image", pixel_values=inputs.pixel_values, grid_thw=inputs.grid_thw)
        return LoadedMedia("image", encoder_input, inputs.num_tokens, digest, grid_thw=inputs.grid_thw)

    def _waveform(self, source: Any, name: str) -> np.ndarray:
        return load_audio(source, max_seconds=self.limits.max_audio_seconds, item=name).waveform

    def _audio(self, media: MediaInput) -> LoadedMedia:
        features = log_mel_spectrogram(
            self._waveform(media.source, media.name), self.audio_config, item=media.name
        )
        digest = content_hash("audio", [media.source], self._fingerprint(self.audio_config), item=media.name)
        encoder_input = EncoderInput("audio", features=features.input_features)
        return LoadedMedia(
            "audio", encoder_input, features.num_tokens, digest, audio_tokens=features.num_tokens
        )

    def _decode_video(self, media: MediaInput, options: MediaOptions, with_track: bool) -> DecodedVideo:
        config, name = self.video_config, media.name
        video_options = VideoOptions(
            fps=options.fps if options.fps is not None else DEFAULT_VIDEO_FPS,
            min_frames=config.min_frames,
            max_frames=config.max_frames,
            temporal_patch_size=config.temporal_patch_size,
            max_seconds=self.limits.max_video_seconds,
            load_audio=with_track,
        )
        source = media.source
        if _is_array(source):
            source = array = np.asarray(source)
            seconds = array.shape[0] / video_options.fps if array.ndim == 4 else 0.0
            if seconds > self.limits.max_video_seconds:
                raise MediaError(
                    f"{array.shape[0]} frames at {video_options.fps:g} fps are {seconds:.1f} s, over the "
                    f"limit of {self.limits.max_video_seconds:g} s",
                    item=name,
                )
        video = load_video(source, video_options, item=name)
        if video.num_frames > self.limits.max_video_frames:
            raise MediaError(
                f"{video.num_frames} frames after sampling, over the limit of {self.limits.max_video_frames}",
                item=name,
            )
        return video

    def _video(self, media: MediaInput, options: MediaOptions) -> LoadedMedia:
        name = media.name
        use_audio = options.use_audio_in_video
        if use_audio and not self.family.supports_audio_in_video:
            raise ValueError(f"use_audio_in_video is not supported by {self.family.model_type} checkpoints")
        if media.audio is not None and not use_audio:
            raise MediaError(
                "an audio track was given but mm_processor_kwargs.use_audio_in_video is off", item=name
            )
        if use_audio and media.audio is None and _is_array(media.source):
            raise MediaError(
                "use_audio_in_video needs the audio track of a frames array: pass "
                "{'video': frames, 'audio': (samples, rate)} or an encoded video",
                item=name,
            )
        video = self._decode_video(media, options, with_track=use_audio and media.audio is None)
        inputs = preprocess_video(video.frames, self.video_config, item=name)
        tp = self.video_config.temporal_patch_size
        seconds_per_grid = video.second_per_grid(tp, convention=self.family.second_per_grid_convention)
        waveform = self._waveform(media.audio, name) if media.audio is not None else video.audio
        fingerprint = self._fingerprint(self.video_config, options.fps, use_audio, self.audio_config)
        sources = [media.source] if media.audio is None else [media.source, media.audio]
        if (
            use_audio
            and waveform is not None
            and waveform.shape[0] > self.limits.max_audio_seconds * self.audio_config.sampling_rate
        ):
            raise MediaError(
                f"audio track is over the limit of {self.limits.max_audio_seconds:g} s", item=name
            )
        if not use_audio or waveform is None:  # a silent video joins as a plain video, as HF does
            digest = content_hash("video", sources, fingerprint, item=name)
            encoder_input = EncoderInput("video", pixel_values=inputs.pixel_values, grid_thw=inputs.grid_thw)
            return LoadedMedia(
                "video", encoder_input, inputs.num_tokens, digest, inputs.grid_thw, seconds_per_grid
            )
        features = log_mel_spectrogram(waveform, self.audio_config, item=f"{name} audio track")
        mrope = self.family.mrope
        runs = audio_in_video_runs(
            inputs.grid_thw,
            self.video_config.merge_size,
            seconds_per_grid,
            features.num_tokens,
            position_id_per_seconds=mrope.position_id_per_seconds,
            seconds_per_chunk=mrope.seconds_per_chunk,
        )
        interleave, next_row = [], {"video": 0, "audio": 0}
        for run in runs:  # (tower, first row in that tower's output, rows)
            interleave.append((run.modality, next_row[run.modality], run.count))
            next_row[run.modality] += run.count
        encoder_input = EncoderInput(
            "video_with_audio",
            pixel_values=inputs.pixel_values,
            grid_thw=inputs.grid_thw,
            features=features.input_features,
            interleave=interleave,
        )
        digest = content_hash("video_with_audio", sources, fingerprint, item=name)
        return LoadedMedia(
            "video_with_audio",
            encoder_input,
            inputs.num_tokens + features.num_tokens,
            digest,
            inputs.grid_thw,
            seconds_per_grid,
            audio_tokens=features.num_tokens,
            runs=runs,
        )
