"""One media item -> its `MediaPlan`, placeholder count and content hash, without decoding pixels.

In: a `MediaInput` (source as given), `MediaOptions` (fps, use_audio_in_video), the checkpoint's
preprocessing configs and a `MediaLease` of the `MediaStore`. Out: `PlannedMedia`. The rows an item gets
are planned from what is cheap to read:

    image  header size + EXIF orientation (PIL, lazy open)       -> smart-resize grid -> rows
    video  stream size, rate and frame count (PyAV, demux only)  -> sampled frames -> grid -> rows
    audio  decoded and resampled to 16 kHz (its exact length sets the rows; decoding audio is cheap)
    audio in video: the video's plan + its audio track, decoded alone (no frame is decoded)

The source goes into the store (or, for a file the caller named, is referenced in place); decoding and
preprocessing happen where the item is encoded (`omniserve.encoders.media_prepare`), which checks the plan.
This module applies `MediaLimits`, the family's video time convention and the audio-in-video layout.
Every failure is a `MediaError` (a ValueError) naming the item ("video 1: ...").

Audio in video (Qwen2.5-Omni, `use_audio_in_video`): the item's rows are the video tower's rows and the
audio tower's rows, interleaved in the order `audio_in_video_runs` gives (per 2 s chunk: that chunk's video
tokens, then its audio tokens); `MediaPlan.interleave` lists the runs as (tower, first row, count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from omniserve.encoders.audio_features import load_audio_feature_config, num_audio_tokens
from omniserve.encoders.audio_io import load_audio
from omniserve.encoders.audio_video_interleave import PlaceholderRun, audio_in_video_runs
from omniserve.encoders.image_io import load_image, probe_image
from omniserve.encoders.media_errors import MediaError
from omniserve.encoders.media_source import resolve_source
from omniserve.encoders.video_io import (
    DEFAULT_VIDEO_FPS,
    VideoOptions,
    VideoProbe,
    load_video_audio_track,
    probe_video,
    second_per_grid,
)
from omniserve.encoders.vision_config import load_image_preprocess_config, load_video_preprocess_config
from omniserve.encoders.vision_preprocess import image_grid_thw, video_grid_thw
from omniserve.frontend.media_hash import content_hash
from omniserve.frontend.media_limits import MediaLimits
from omniserve.frontend.media_store import MediaLease, MediaStore, reference_file
from omniserve.frontend.mm_family import MultimodalFamily
from omniserve.frontend.mm_inputs import MediaInput, MediaOptions
from omniserve.multimodal import MediaPlan, StoredMedia


@dataclass
class PlannedMedia:
    modality: str  # "image" | "video" | "audio" | "video_with_audio"
    plan: MediaPlan  # where the source lies and what the preprocessor must make of it
    num_tokens: int  # placeholder tokens == embedding rows (video + audio tokens for video_with_audio)
    content_hash: bytes  # 16 bytes, see media_hash
    grid_thw: tuple[int, int, int] | None = None  # vision grid in patches (image, video)
    seconds_per_grid: float = 1.0  # seconds per temporal patch (video)
    audio_tokens: int = 0  # audio rows (audio, video_with_audio)
    runs: list[PlaceholderRun] = field(default_factory=list)  # video_with_audio: placeholder layout


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) or type(value).__name__ == "Tensor"


def _resolved(source: Any, name: str) -> Any:
    """Encoded media (bytes, data URL, path) -> its bytes or its file path (str), resolved once for hashing,
    probing and storing (a data URL is base64-decoded once); arrays and PIL images are returned as given."""
    if _is_array(source) or isinstance(source, (Image.Image, tuple)):
        return source
    resolved = resolve_source(source, item=name)
    return resolved.data if resolved.data is not None else str(resolved.path)


def _as_numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if type(value).__name__ == "Tensor" else np.asarray(value)


class MediaPlanner:
    def __init__(
        self, model_path: str | Path, family: MultimodalFamily, limits: MediaLimits, store: MediaStore
    ) -> None:
        self.family = family
        self.limits = limits
        self.store = store
        self.image_config = load_image_preprocess_config(model_path)
        self.video_config = load_video_preprocess_config(model_path)
        self.audio_config = load_audio_feature_config(model_path)

    def plan(self, media: MediaInput, options: MediaOptions, lease: MediaLease) -> PlannedMedia:
        if media.modality == "image":
            return self._image(media, lease)
        if media.modality == "audio":
            return self._audio(media, lease)
        return self._video(media, options, lease)

    def _fingerprint(self, *parts: Any) -> str:
        return repr((self.family.model_type, *parts))

    def _store_encoded(self, source: bytes | str, digest: bytes, role: str, lease: MediaLease) -> StoredMedia:
        """A resolved source (`_resolved`) -> its stored form: bytes written once, a path used in place."""
        if isinstance(source, str):
            return reference_file(source)
        return self.store.put_bytes(source, f"{digest.hex()}-{role}", lease)

    # ----- image -----------------------------------------------------------------------------------------
    def _image(self, media: MediaInput, lease: MediaLease) -> PlannedMedia:
        source, name = _resolved(media.source, media.name), media.name
        max_pixels = self.limits.max_image_pixels
        digest = content_hash("image", [source], self._fingerprint(self.image_config), item=name)
        if _is_array(source) or isinstance(source, Image.Image):
            if isinstance(source, Image.Image):  # decoded already: upright RGB pixels go to the store
                array = np.asarray(load_image(source, max_pixels=max_pixels, item=name))
            else:
                array = _as_numpy(source)
                if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
                    raise MediaError(f"expected uint8 [H, W, 3], got {array.dtype} {array.shape}", item=name)
                if array.shape[0] * array.shape[1] > max_pixels:
                    raise MediaError(
                        f"image has {array.shape[1]}x{array.shape[0]} pixels, over the limit of {max_pixels}",
                        item=name,
                    )
            height, width = array.shape[:2]
            stored = self.store.put_array(array, f"{digest.hex()}-image", lease)
        else:
            height, width = probe_image(source, max_pixels=max_pixels, item=name)
            stored = self._store_encoded(source, digest, "image", lease)
        grid = image_grid_thw(height, width, self.image_config)
        num_tokens = math.prod(grid) // self.image_config.merge_size**2
        plan = MediaPlan("image", stored, name, num_tokens, grid_thw=grid, max_image_pixels=max_pixels)
        return PlannedMedia("image", plan, num_tokens, digest, grid_thw=grid)

    # ----- audio -----------------------------------------------------------------------------------------
    def _waveform(self, source: Any, name: str) -> np.ndarray:
        return load_audio(source, max_seconds=self.limits.max_audio_seconds, item=name).waveform

    def _audio_tokens(self, waveform: np.ndarray, name: str) -> int:
        tokens = num_audio_tokens(int(waveform.shape[0]), self.audio_config)
        if tokens < 1:
            raise MediaError(
                f"audio is too short ({waveform.shape[0]} samples) to give any audio token", item=name
            )
        return tokens

    def _audio(self, media: MediaInput, lease: MediaLease) -> PlannedMedia:
        name = media.name
        waveform = self._waveform(media.source, name)
        tokens = self._audio_tokens(waveform, name)
        digest = content_hash("audio", [media.source], self._fingerprint(self.audio_config), item=name)
        stored = self.store.put_array(waveform, f"{digest.hex()}-audio", lease)
        plan = MediaPlan("audio", stored, name, tokens, audio_tokens=tokens)
        return PlannedMedia("audio", plan, tokens, digest, audio_tokens=tokens)

    # ----- video -----------------------------------------------------------------------------------------
    def _video_options(self, options: MediaOptions) -> VideoOptions:
        config = self.video_config
        return VideoOptions(
            fps=options.fps if options.fps is not None else DEFAULT_VIDEO_FPS,
            min_frames=config.min_frames,
            max_frames=config.max_frames,
            temporal_patch_size=config.temporal_patch_size,
            max_seconds=self.limits.max_video_seconds,
        )

    def _probe(self, source: Any, video_options: VideoOptions, name: str) -> VideoProbe:
        if _is_array(source):
            array = source
            seconds = array.shape[0] / video_options.fps if array.ndim == 4 else 0.0
            if seconds > self.limits.max_video_seconds:
                raise MediaError(
                    f"{array.shape[0]} frames at {video_options.fps:g} fps are {seconds:.1f} s, over the "
                    f"limit of {self.limits.max_video_seconds:g} s",
                    item=name,
                )
        probe = probe_video(source, video_options, item=name)
        if probe.num_sampled_frames > self.limits.max_video_frames:
            raise MediaError(
                f"{probe.num_sampled_frames} frames after sampling, over the limit of "
                f"{self.limits.max_video_frames}",
                item=name,
            )
        return probe

    def _video(self, media: MediaInput, options: MediaOptions, lease: MediaLease) -> PlannedMedia:
        name = media.name
        use_audio = options.use_audio_in_video
        if use_audio and not self.family.supports_audio_in_video:
            raise ValueError(f"use_audio_in_video is not supported by {self.family.model_type} checkpoints")
        if media.audio is not None and not use_audio:
            raise MediaError(
                "an audio track was given but mm_processor_kwargs.use_audio_in_video is off", item=name
            )
        source = _as_numpy(media.source) if _is_array(media.source) else _resolved(media.source, name)
        if use_audio and media.audio is None and _is_array(source):
            raise MediaError(
                "use_audio_in_video needs the audio track of a frames array: pass "
                "{'video': frames, 'audio': (samples, rate)} or an encoded video",
                item=name,
            )
        video_options = self._video_options(options)
        probe = self._probe(source, video_options, name)
        config = self.video_config
        grid = video_grid_thw(probe.num_sampled_frames, probe.height, probe.width, config)
        video_tokens = math.prod(grid) // config.merge_size**2
        seconds_per_grid = second_per_grid(
            probe.num_sampled_frames,
            probe.source_num_frames,
            probe.source_fps,
            video_options.fps,
            config.temporal_patch_size,
            convention=self.family.second_per_grid_convention,
        )
        waveform = None
        if use_audio:
            if media.audio is not None:
                waveform = self._waveform(media.audio, name)
            else:
                track_options = VideoOptions(max_seconds=self.limits.max_audio_seconds)
                waveform = load_video_audio_track(source, track_options, item=name)
        fingerprint = self._fingerprint(config, options.fps, use_audio, self.audio_config)
        sources = [source] if media.audio is None else [source, media.audio]
        if (
            waveform is not None
            and waveform.shape[0] > self.limits.max_audio_seconds * self.audio_config.sampling_rate
        ):
            raise MediaError(
                f"audio track is over the limit of {self.limits.max_audio_seconds:g} s", item=name
            )
        modality = "video" if waveform is None else "video_with_audio"  # a silent video joins as a plain one
        digest = content_hash(modality, sources, fingerprint, item=name)
        if isinstance(source, np.ndarray):
            stored = self.store.put_array(source, f"{digest.hex()}-video", lease)
        else:
            stored = self._store_encoded(source, digest, "video", lease)
        if waveform is None:
            plan = MediaPlan("video", stored, name, video_tokens, grid_thw=grid, video_options=video_options)
            return PlannedMedia("video", plan, video_tokens, digest, grid, seconds_per_grid)
        audio_tokens = self._audio_tokens(waveform, f"{name} audio track")
        mrope = self.family.mrope
        runs = audio_in_video_runs(
            grid,
            config.merge_size,
            seconds_per_grid,
            audio_tokens,
            position_id_per_seconds=mrope.position_id_per_seconds,
            seconds_per_chunk=mrope.seconds_per_chunk,
        )
        interleave, next_row = [], {"video": 0, "audio": 0}
        for run in runs:  # (tower, first row in that tower's output, rows)
            interleave.append((run.modality, next_row[run.modality], run.count))
            next_row[run.modality] += run.count
        plan = MediaPlan(
            "video_with_audio",
            stored,
            name,
            video_tokens + audio_tokens,
            grid_thw=grid,
            audio_tokens=audio_tokens,
            audio=self.store.put_array(waveform, f"{digest.hex()}-track", lease),
            video_options=video_options,
            interleave=tuple(interleave),
        )
        return PlannedMedia(
            "video_with_audio",
            plan,
            video_tokens + audio_tokens,
            digest,
            grid,
            seconds_per_grid,
            audio_tokens=audio_tokens,
            runs=runs,
        )
