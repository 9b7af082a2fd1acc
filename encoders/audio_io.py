"""Audio loading: encoded audio (wav, mp3, flac, ogg/vorbis/opus, m4a/aac, webm) or (samples, rate) in;
mono float32 at 16 kHz out.

In: `AudioSource`: bytes, a `data:` URL, a path, or a tuple `(samples, sample_rate)` with samples shaped
[S], [C, S] or [S, C] (float in [-1, 1], or int16/int32/uint8 PCM). Out: `DecodedAudio`, whose `waveform`
is [S'] float32 at `sample_rate` (16000 unless asked otherwise): channels averaged (as librosa's to_mono),
then resampled with `torchaudio.functional.resample` (windowed sinc, its defaults).
`decode_audio_stream` is shared with `video_io` for the audio track of a video (`use_audio_in_video`).
Errors (unknown format, corrupt data, no samples, longer than `max_seconds`) are `MediaError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
import torch
import torchaudio.functional as AF
from omniserve.encoders.av_container import AUDIO_CONTAINERS, open_container
from omniserve.encoders.media_errors import MediaError
from omniserve.encoders.media_source import MediaSource

AudioSource = MediaSource | tuple[np.ndarray | torch.Tensor, int]

TARGET_SAMPLE_RATE = 16000  # what the Whisper feature extractor of Qwen2-Audio / Qwen2.5-Omni expects
DEFAULT_MAX_AUDIO_SECONDS = 600.0  # refuse longer items (Omni-7B's feature extractor keeps 300 s at most)
MAX_CHANNELS = 64  # a channel count beyond this in an array input is taken as a layout mistake
_PCM_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}


@dataclass(frozen=True)
class DecodedAudio:
    waveform: np.ndarray  # [num_samples] float32 mono at sample_rate
    sample_rate: int  # Hz of waveform (TARGET_SAMPLE_RATE unless asked otherwise)
    source_sample_rate: int  # Hz of the stored audio before resampling
    source_channels: int  # channels of the stored audio before the downmix

    @property
    def num_samples(self) -> int:
        return int(self.waveform.shape[0])

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate


def resample(waveform: np.ndarray, source_rate: int, target_rate: int = TARGET_SAMPLE_RATE) -> np.ndarray:
    """[S] float32 at source_rate -> [ceil(S * target_rate / source_rate)] float32 at target_rate."""
    if source_rate == target_rate:
        return waveform
    resampled = AF.resample(torch.from_numpy(np.ascontiguousarray(waveform)), source_rate, target_rate)
    return resampled.numpy()


def mono_at_rate(
    channels: np.ndarray, source_rate: int, *, target_rate: int, max_seconds: float, item: str
) -> DecodedAudio:
    """[C, S] float32 at source_rate -> DecodedAudio: length and finiteness checks, mean over channels,
    resample to target_rate."""
    if channels.shape[-1] == 0:
        raise MediaError("audio has no samples (zero length)", item=item)
    if channels.shape[-1] > max_seconds * source_rate:
        raise MediaError(
            f"audio is {channels.shape[-1] / source_rate:.1f} s long, over the limit of {max_seconds:g} s",
            item=item,
        )
    if not np.isfinite(channels).all():
        raise MediaError("audio samples contain NaN or infinity", item=item)
    mono = (
        channels.mean(axis=0, dtype=np.float64).astype(np.float32) if channels.shape[0] > 1 else channels[0]
    )
    waveform = resample(np.ascontiguousarray(mono, dtype=np.float32), source_rate, target_rate)
    return DecodedAudio(waveform, target_rate, source_rate, int(channels.shape[0]))


def _array_to_channels(samples: np.ndarray | torch.Tensor, item: str) -> np.ndarray:
    """[S], [C, S] or [S, C] (C = the smaller axis) float or integer PCM -> [C, S] float32."""
    array = samples.detach().cpu().numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
    if array.ndim == 1:
        array = array[None]
    elif array.ndim == 2:
        if array.shape[0] > array.shape[1]:
            array = array.T  # [S, C] -> [C, S]
        if array.shape[0] > MAX_CHANNELS:
            raise MediaError(f"audio array of shape {samples.shape} has too many channels", item=item)
    else:
        raise MediaError(
            f"audio array must be [S], [C, S] or [S, C], got shape {tuple(array.shape)}", item=item
        )
    if array.dtype in _PCM_SCALE:
        return (array / _PCM_SCALE[array.dtype]).astype(np.float32)
    if array.dtype == np.uint8:
        return ((array.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    if not np.issubdtype(array.dtype, np.floating):
        raise MediaError(f"audio samples of dtype {array.dtype} are not supported", item=item)
    return array.astype(np.float32)


def decode_audio_stream(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    *,
    max_seconds: float,
    item: str,
) -> tuple[np.ndarray, int]:
    """Decode one audio stream of an open container -> ([C, S] float32 planar, sample rate).

    Stops with MediaError as soon as the decoded length passes `max_seconds`.
    """
    resampler: av.AudioResampler | None = None  # to planar float, keeping rate and channels
    chunks: list[np.ndarray] = []
    num_samples, sample_rate = 0, 0
    try:
        for frame in container.decode(stream):
            if resampler is None:
                sample_rate = frame.sample_rate
                resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=sample_rate)
            for converted in resampler.resample(frame):
                chunks.append(converted.to_ndarray())  # [C, n]
                num_samples += converted.samples
            if num_samples > max_seconds * sample_rate:
                raise MediaError(f"audio is longer than the limit of {max_seconds:g} s", item=item)
        if resampler is not None:
            for converted in resampler.resample(None):  # flush
                chunks.append(converted.to_ndarray())
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as error:
        raise MediaError(f"corrupt audio data ({error})", item=item) from error
    if not chunks:
        raise MediaError("audio has no samples (zero length)", item=item)
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), sample_rate


def load_audio(
    source: AudioSource,
    *,
    target_rate: int = TARGET_SAMPLE_RATE,
    max_seconds: float = DEFAULT_MAX_AUDIO_SECONDS,
    item: str = "audio",
) -> DecodedAudio:
    """Decode (or take) audio and return it mono at `target_rate`; MediaError for unusable audio."""
    if isinstance(source, tuple):
        samples, source_rate = source
        if not isinstance(source_rate, (int, np.integer)) or source_rate <= 0:
            raise MediaError(f"sample rate must be a positive integer, got {source_rate!r}", item=item)
        channels = _array_to_channels(samples, item)
        return mono_at_rate(
            channels, int(source_rate), target_rate=target_rate, max_seconds=max_seconds, item=item
        )
    with open_container(source, AUDIO_CONTAINERS, kind="audio", item=item) as container:
        if not container.streams.audio:
            raise MediaError("no audio stream in the container", item=item)
        stream = container.streams.audio[0]
        declared = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        if declared is not None and declared > max_seconds + 1.0:  # header says too long: skip decoding
            raise MediaError(
                f"audio is {declared:.1f} s long, over the limit of {max_seconds:g} s", item=item
            )
        channels, source_rate = decode_audio_stream(container, stream, max_seconds=max_seconds, item=item)
    return mono_at_rate(channels, source_rate, target_rate=target_rate, max_seconds=max_seconds, item=item)
