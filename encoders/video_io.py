"""Video loading: encoded video (mp4/mov, mkv/webm, avi, ogg, mpegts, flv) or uint8 frames in; the frames
sampled at the requested fps, their timestamps, and (optionally) the audio track out.

In: `VideoSource` (bytes, a `data:` URL, a path) or a uint8 array [T, H, W, 3], plus `VideoOptions`.
Out: `DecodedVideo`: frames [T', H, W, 3] uint8, source frame indices and timestamps, the fps asked for
and the fps actually sampled, and (with `load_audio`) the audio track, mono float32 at 16 kHz.

Frame sampling is transformers 5.24's `Qwen2VLVideoProcessor.sample_frames` (fps path), from the stream's
declared frame count and average rate as its PyAV reader reads them:
    n = clamp(total / source_fps * fps, min_frames, floor(min(max_frames, total) / tp) * tp)
    n = floor(n / tp) * tp;  indices = torch.arange(0, total, total / n).int()
so T' is normally a multiple of temporal_patch_size (tp). Where HF would fail (fewer than tp frames:
n == 0), every frame is kept and `vision_preprocess.patchify` pads by repeating the last frame, as HF's
patchify does for odd counts. `second_per_grid` gives the M-RoPE time step per temporal patch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import av
import numpy as np
import torch
from omniserve.encoders.audio_io import TARGET_SAMPLE_RATE, decode_audio_stream, mono_at_rate
from omniserve.encoders.av_container import VIDEO_CONTAINERS, open_container
from omniserve.encoders.media_errors import MediaError
from omniserve.encoders.media_source import MediaSource

VideoSource = MediaSource | np.ndarray

DEFAULT_VIDEO_FPS = 2.0  # Qwen2.5-Omni / Qwen2.5-VL sampling rate (qwen-vl-utils FPS)


@dataclass(frozen=True)
class VideoOptions:
    fps: float | None = DEFAULT_VIDEO_FPS  # frames per second to sample; None keeps every frame
    min_frames: int = 4  # fewest frames sampling keeps (Qwen2VLVideoProcessor.min_frames)
    max_frames: int = 768  # most frames sampling keeps (Qwen2VLVideoProcessor.max_frames)
    temporal_patch_size: int = 2  # sampled counts are rounded down to a multiple of this
    max_frame_pixels: int = 3840 * 2160  # refuse frames larger than 4K UHD before decoding any
    max_seconds: float = 3600.0  # refuse longer videos (declared duration or decoded length)
    load_audio: bool = False  # also decode the first audio track (Omni's use_audio_in_video)
    audio_sample_rate: int = TARGET_SAMPLE_RATE  # rate of DecodedVideo.audio


@dataclass(frozen=True)
class DecodedVideo:
    frames: np.ndarray  # [T, H, W, 3] uint8 RGB, the sampled frames
    frame_indices: np.ndarray  # [T] int64 index of each frame in the source stream
    timestamps_s: np.ndarray  # [T] float64 seconds of each frame: index / source_fps
    source_fps: float  # frame rate of the source (average rate of the stream)
    source_num_frames: int  # frames in the source stream
    requested_fps: float | None  # the fps asked for (None: frames taken as given)
    audio: np.ndarray | None  # [S] float32 mono track at audio_sample_rate; None: not asked or silent video
    audio_sample_rate: int  # Hz of `audio`

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def sampled_fps(self) -> float:
        """Frames kept per second of source: len(indices) / total * source_fps (HF `sampled_fps`)."""
        return self.num_frames / self.source_num_frames * self.source_fps

    def second_per_grid(self, temporal_patch_size: int = 2, *, convention: str = "qwen2_5_omni") -> float:
        """Seconds per temporal patch for M-RoPE, as the HF processor computes it:
        "qwen2_5_omni": tp / requested fps (2.0 when none), `video_second_per_grid`;
        "qwen2_5_vl":   tp / sampled_fps, `second_per_grid_ts`."""
        return second_per_grid(
            self.num_frames,
            self.source_num_frames,
            self.source_fps,
            self.requested_fps,
            temporal_patch_size,
            convention=convention,
        )


def second_per_grid(
    num_frames: int,
    source_num_frames: int,
    source_fps: float,
    requested_fps: float | None,
    temporal_patch_size: int = 2,
    *,
    convention: str = "qwen2_5_omni",
) -> float:
    """`DecodedVideo.second_per_grid` from counts alone (a `VideoProbe` gives them before decoding)."""
    if convention == "qwen2_5_omni":
        return temporal_patch_size / (requested_fps or DEFAULT_VIDEO_FPS)
    if convention == "qwen2_5_vl":
        return temporal_patch_size / (num_frames / source_num_frames * source_fps)
    raise ValueError(f"unknown convention {convention!r} (qwen2_5_omni or qwen2_5_vl)")


def sample_frame_indices(
    total_frames: int,
    source_fps: float,
    fps: float,
    *,
    min_frames: int = 4,
    max_frames: int = 768,
    temporal_patch_size: int = 2,
) -> np.ndarray:
    """Indices of the frames to keep, Qwen2VLVideoProcessor.sample_frames with `fps` (see module doc)."""
    if total_frames < 1:
        raise MediaError("video has no frames", item="video")
    tp = temporal_patch_size
    frame_cap = (min(max_frames, total_frames) // tp) * tp
    wanted = min(max(total_frames / source_fps * fps, min_frames), frame_cap, total_frames)
    num_frames = math.floor(wanted / tp) * tp
    if num_frames == 0:  # fewer than tp frames: HF divides by zero; keep them all, patchify pads
        return np.arange(total_frames, dtype=np.int64)
    return torch.arange(0, total_frames, total_frames / num_frames).int().numpy().astype(np.int64)


def _sample(total_frames: int, source_fps: float, options: VideoOptions) -> np.ndarray:
    assert options.fps is not None
    return sample_frame_indices(
        total_frames,
        source_fps,
        options.fps,
        min_frames=options.min_frames,
        max_frames=options.max_frames,
        temporal_patch_size=options.temporal_patch_size,
    )


def _stream_fps(stream: av.VideoStream, item: str) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0:
        raise MediaError("video stream has no usable frame rate", item=item)
    return float(rate)


def _count_frames(container: av.container.InputContainer, stream: av.VideoStream) -> int:
    """Frames by demuxing (no decoding), for containers that do not declare the count."""
    count = sum(1 for packet in container.demux(stream) if packet.size)
    container.seek(0)
    return count


def _decode_frames(
    container: av.container.InputContainer, stream: av.VideoStream, indices: np.ndarray, item: str
) -> tuple[np.ndarray, np.ndarray]:
    """Decode up to the last wanted index and keep the wanted frames -> ([T, H, W, 3], kept indices)."""
    wanted, last = set(indices.tolist()), int(indices[-1])
    frames, kept = [], []
    try:
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                frames.append(frame.to_ndarray(format="rgb24"))
                kept.append(index)
            if index >= last:
                break
    except (av.FFmpegError, OSError, ValueError, EOFError) as error:
        if not frames:
            raise MediaError(f"corrupt video data ({error})", item=item) from error
    if not frames:
        raise MediaError("video has no decodable frames", item=item)
    return np.stack(frames), np.asarray(kept, dtype=np.int64)


def _decode_audio_track(
    container: av.container.InputContainer, options: VideoOptions, item: str
) -> np.ndarray | None:
    if not container.streams.audio:
        return None  # silent video: the Omni processor then adds no audio for it
    container.seek(0)
    stream = container.streams.audio[0]
    channels, rate = decode_audio_stream(container, stream, max_seconds=options.max_seconds, item=item)
    target_rate, max_seconds = options.audio_sample_rate, options.max_seconds
    return mono_at_rate(channels, rate, target_rate=target_rate, max_seconds=max_seconds, item=item).waveform


def video_from_frames(
    frames: np.ndarray | torch.Tensor,
    *,
    source_fps: float | None = None,
    options: VideoOptions | None = None,
    item: str = "video",
) -> DecodedVideo:
    """Frames already decoded, uint8 [T, H, W, 3]. With `source_fps` they are sampled at options.fps;
    without it they are taken as already sampled at options.fps (the HF processor's default,
    do_sample_frames=False), and more than options.max_frames is an error."""
    options = options or VideoOptions()
    array = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise MediaError(f"expected uint8 frames [T, H, W, 3], got {array.dtype} {array.shape}", item=item)
    total = int(array.shape[0])
    if total == 0:
        raise MediaError("video has no frames", item=item)
    if array.shape[1] * array.shape[2] > options.max_frame_pixels:
        raise MediaError(f"frames of {array.shape[2]}x{array.shape[1]} are over the pixel limit", item=item)
    if source_fps is not None and options.fps is not None:
        indices = _sample(total, source_fps, options)
    elif total > options.max_frames:
        raise MediaError(f"{total} frames given, over the limit of {options.max_frames}", item=item)
    else:
        indices = np.arange(total, dtype=np.int64)
    fps = source_fps if source_fps is not None else (options.fps or DEFAULT_VIDEO_FPS)
    return DecodedVideo(
        frames=np.ascontiguousarray(array[indices]),
        frame_indices=indices,
        timestamps_s=indices / fps,
        source_fps=float(fps),
        source_num_frames=total,
        requested_fps=options.fps,
        audio=None,
        audio_sample_rate=options.audio_sample_rate,
    )


@dataclass(frozen=True)
class VideoProbe:
    height: int  # frame height stored in the stream (before any resize)
    width: int  # frame width stored in the stream
    source_fps: float  # average frame rate of the stream
    source_num_frames: int  # frames in the stream (declared, or counted by demuxing)
    num_sampled_frames: int  # frames load_video keeps with the same options (T of the grid input)


def _plan(
    container: av.container.InputContainer, options: VideoOptions, item: str
) -> tuple[av.VideoStream, VideoProbe, np.ndarray]:
    """Checks from the headers (and a demux pass when the count is not declared), no decoding:
    -> (video stream, its probe, indices of the frames to keep)."""
    if not container.streams.video:
        raise MediaError("no video stream in the container", item=item)
    stream = container.streams.video[0]
    if stream.width * stream.height > options.max_frame_pixels:
        size, limit = f"{stream.width}x{stream.height}", options.max_frame_pixels
        raise MediaError(f"frames of {size} are over the limit of {limit} pixels", item=item)
    source_fps = _stream_fps(stream, item)
    total = stream.frames or _count_frames(container, stream)
    if total < 1:
        raise MediaError("video has no frames", item=item)
    if total / source_fps > options.max_seconds:
        raise MediaError(
            f"video is {total / source_fps:.1f} s long, over the limit of {options.max_seconds:g} s",
            item=item,
        )
    if options.fps is None:
        if total > options.max_frames:
            raise MediaError(f"{total} frames, over the limit of {options.max_frames}", item=item)
        indices = np.arange(total, dtype=np.int64)
    else:
        indices = _sample(total, source_fps, options)
    probe = VideoProbe(stream.height, stream.width, source_fps, int(total), int(indices.shape[0]))
    return stream, probe, indices


def probe_video(
    source: VideoSource, options: VideoOptions | None = None, *, item: str = "video"
) -> VideoProbe:
    """Size, rate and sampled frame count without decoding a frame, for placeholder counts:
    `vision_preprocess.num_video_tokens(p.num_sampled_frames, p.height, p.width, config)`."""
    options = options or VideoOptions()
    if isinstance(source, np.ndarray):
        video = video_from_frames(source, options=options, item=item)
        return VideoProbe(
            *video.frames.shape[1:3], video.source_fps, video.source_num_frames, video.num_frames
        )
    with open_container(source, VIDEO_CONTAINERS, kind="video", item=item) as container:
        return _plan(container, options, item)[1]


def load_video(
    source: VideoSource, options: VideoOptions | None = None, *, item: str = "video"
) -> DecodedVideo:
    """Decode `source` and sample its frames at options.fps; MediaError for unusable video."""
    options = options or VideoOptions()
    if isinstance(source, np.ndarray):
        return video_from_frames(source, options=options, item=item)
    with open_container(source, VIDEO_CONTAINERS, kind="video", item=item) as container:
        stream, probe, indices = _plan(container, options, item)
        stream.thread_type = "AUTO"
        frames, kept = _decode_frames(container, stream, indices, item)
        audio = _decode_audio_track(container, options, item) if options.load_audio else None
    return DecodedVideo(
        frames=frames,
        frame_indices=kept,
        timestamps_s=kept / probe.source_fps,
        source_fps=probe.source_fps,
        source_num_frames=probe.source_num_frames,
        requested_fps=options.fps,
        audio=audio,
        audio_sample_rate=options.audio_sample_rate,
    )


def load_video_audio_track(
    source: MediaSource, options: VideoOptions | None = None, *, item: str = "video"
) -> np.ndarray | None:
    """Only the first audio track of an encoded video, mono float32 at options.audio_sample_rate (no frame is
    decoded); None for a silent video. For planning `use_audio_in_video` items: their audio rows depend on
    the track's exact length."""
    options = options or VideoOptions()
    with open_container(source, VIDEO_CONTAINERS, kind="video", item=item) as container:
        if not container.streams.video:
            raise MediaError("no video stream in the container", item=item)
        return _decode_audio_track(container, options, item)
