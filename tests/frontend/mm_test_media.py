"""Media built in code for the multimodal frontend tests: images, wav bytes, mp4 with an audio track."""

from __future__ import annotations

import base64
import io
import wave
from fractions import Fraction

import av
import numpy as np
from PIL import Image


def image(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_bytes(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def data_url(payload: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode()}"


def speech(seconds: float, seed: int = 0, rate: int = 16000) -> np.ndarray:
    """[S] float32: a chirp plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * rng.standard_normal(t.shape)).astype(
        np.float32
    )


def wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(pcm.tobytes())
    return buffer.getvalue()


def frames(num_frames: int, height: int = 56, width: int = 84, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)


def mp4_with_audio(
    num_frames: int, fps: int, audio_seconds: float, height: int = 56, width: int = 84
) -> bytes:
    """An mp4 (mpeg4 video of smooth frames, mono AAC tone at 16 kHz)."""
    buffer = io.BytesIO()
    rate = 16000
    with av.open(buffer, mode="w", format="mp4") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=rate)
        audio.layout = "mono"
        for index in range(num_frames):
            frame = np.full((height, width, 3), 10 + 20 * (index % 12), dtype=np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        samples = speech(audio_seconds)[None]
        for start in range(0, samples.shape[1], 1024):
            chunk = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, start : start + 1024]), format="fltp", layout="mono"
            )
            chunk.sample_rate, chunk.pts, chunk.time_base = rate, start, Fraction(1, rate)
            for packet in audio.encode(chunk):
                container.mux(packet)
        for packet in audio.encode(None):
            container.mux(packet)
    return buffer.getvalue()
