"""Media built in code for the encoder tests: images, wav/mp3/flac/ogg/opus/m4a audio, mp4 video.

Everything is synthesized (numpy signals, PyAV encoders, the `wave` module); nothing is read from disk or
the network. `encoder_available(name)` lets a test skip a format whose encoder this FFmpeg build lacks.
"""

from __future__ import annotations

import io
import wave
from fractions import Fraction

import av
import numpy as np
from PIL import Image

# format -> (container format, codec, codec sample format, container-friendly sample rate)
AUDIO_FORMATS = {
    "mp3": ("mp3", "libmp3lame", "s16p", 44100),
    "flac": ("flac", "flac", "s16", 44100),
    "ogg_vorbis": ("ogg", "vorbis", "fltp", 44100),
    "ogg_opus": ("ogg", "libopus", "s16", 48000),
    "m4a_aac": ("ipod", "aac", "fltp", 44100),
}


def encoder_available(codec: str) -> bool:
    try:
        av.codec.Codec(codec, "w")
    except Exception:  # av raises UnknownCodecError (a ValueError) or FFmpegError by build
        return False
    return True


def tone(seconds: float, rate: int, frequency: float = 440.0, channels: int = 1) -> np.ndarray:
    """[channels, samples] float32 sine at 0.5 amplitude; channel c is shifted by c * 110 Hz."""
    t = np.arange(int(round(seconds * rate))) / rate
    rows = [0.5 * np.sin(2 * np.pi * (frequency + 110 * c) * t) for c in range(channels)]
    return np.stack(rows).astype(np.float32)


def tone_energy_share(waveform: np.ndarray, rate: int, frequencies: list[float], width: float = 5.0) -> float:
    """Share of the signal's energy within +-width Hz of `frequencies` (1 = pure tones there)."""
    power = np.abs(np.fft.rfft(waveform)) ** 2
    bins = np.fft.rfftfreq(len(waveform), 1 / rate)
    near = np.zeros_like(bins, dtype=bool)
    for frequency in frequencies:
        near |= np.abs(bins - frequency) <= width
    return float(power[near].sum() / power.sum())


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """[C, S] float in [-1, 1] -> 16-bit PCM wav bytes written by the `wave` module."""
    pcm = np.clip(np.round(samples.T * 32767), -32768, 32767).astype("<i2")  # [S, C] interleaved
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(samples.shape[0])
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(pcm.tobytes())
    return buffer.getvalue()


def encoded_audio(kind: str, seconds: float = 1.0, channels: int = 2) -> bytes:
    """A tone of `seconds` encoded as AUDIO_FORMATS[kind] with PyAV."""
    container_format, codec, sample_format, rate = AUDIO_FORMATS[kind]
    samples = tone(seconds, rate, channels=channels)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "stereo" if channels == 2 else "mono"
        if codec == "vorbis":
            stream.codec_context.options = {"strict": "experimental"}
        frame_size = stream.codec_context.frame_size or 1024
        for start in range(0, samples.shape[1], frame_size):
            chunk = samples[:, start : start + frame_size]
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(chunk), format="fltp", layout=stream.layout
            )
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            for packet in stream.encode(_convert(frame, sample_format, stream.layout.name, rate)):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def _convert(frame: av.AudioFrame, sample_format: str, layout: str, rate: int) -> av.AudioFrame:
    if sample_format == "fltp":
        return frame
    converted = av.AudioResampler(format=sample_format, layout=layout, rate=rate).resample(frame)
    return converted[0]


def frame_pattern(index: int, height: int, width: int) -> np.ndarray:
    """[H, W, 3] uint8 frame whose mean brightness encodes `index` (10 + 20 * index), smooth enough for
    mpeg4 to keep it: frame i of a decoded video is recognisable by its mean."""
    frame = np.full((height, width, 3), 10 + 20 * index, dtype=np.uint8)
    frame[: height // 4, : width // 4] = 255 - (10 + 20 * index)
    return frame


def mp4_bytes(
    num_frames: int,
    fps: int,
    height: int = 64,
    width: int = 96,
    audio_seconds: float | None = None,
    audio_rate: int = 44100,
) -> bytes:
    """An mp4 (codec mpeg4, yuv420p) of `frame_pattern` frames, with a stereo AAC tone track if asked."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.options = {"qscale": "2"}
        audio = None
        if audio_seconds is not None:
            audio = container.add_stream("aac", rate=audio_rate)
            audio.layout = "stereo"
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(frame_pattern(index % 12, height, width), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if audio is not None:
            samples = tone(audio_seconds, audio_rate, channels=2)
            for start in range(0, samples.shape[1], 1024):
                chunk = np.ascontiguousarray(samples[:, start : start + 1024])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                frame.sample_rate, frame.pts, frame.time_base = audio_rate, start, Fraction(1, audio_rate)
                for packet in audio.encode(frame):
                    container.mux(packet)
            for packet in audio.encode(None):
                container.mux(packet)
    return buffer.getvalue()


def random_image(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def encoded_image(image: Image.Image, image_format: str, **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **save_args)
    return buffer.getvalue()
