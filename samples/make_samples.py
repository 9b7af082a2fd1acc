"""Make the sample media beside this script: image.png, video.mp4 (with sound) and speech.wav.

    python samples/make_samples.py        # rewrites the three files; same bytes every run

Everything is synthesized (no downloads): a drawn scene, a short clip of a ball crossing that scene with a
beep at each bounce, and a speech-like voice (a glottal pulse train at a moving pitch through vowel
formant filters, syllable by syllable). Each file stays well under 200 KB.
"""

from __future__ import annotations

import math
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
WIDTH, HEIGHT = 192, 144
VIDEO_FPS, VIDEO_SECONDS = 12, 3
AUDIO_RATE = 16_000
# (F1, F2, F3) in Hz of the vowels a, e, i, o, u (adult male averages).
VOWELS = {"a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010), "o": (570, 840, 2410),
          "u": (300, 870, 2240)}


def draw_scene(ball_x: float | None = None, ball_y: float = 0.0) -> Image.Image:
    """Sky, sun, sea, a lighthouse; optionally a red ball at (ball_x, ball_y)."""
    image = Image.new("RGB", (WIDTH, HEIGHT))
    draw = ImageDraw.Draw(image)
    for y in range(HEIGHT * 2 // 3):  # sky: light blue to white
        shade = int(150 + 100 * y / (HEIGHT * 2 / 3))
        draw.line([(0, y), (WIDTH, y)], fill=(shade - 60, shade - 20, 255))
    draw.rectangle([0, HEIGHT * 2 // 3, WIDTH, HEIGHT], fill=(20, 70, 140))  # sea
    draw.ellipse([WIDTH - 50, 12, WIDTH - 18, 44], fill=(255, 210, 40))  # sun
    base = HEIGHT * 2 // 3
    draw.polygon([(40, base), (56, base), (52, base - 60), (44, base - 60)], fill=(240, 240, 240))  # tower
    for stripe in range(3):
        top = base - 15 - stripe * 18
        draw.rectangle([41 + stripe, top - 6, 55 - stripe, top], fill=(200, 30, 30))
    draw.rectangle([42, base - 70, 54, base - 60], fill=(255, 240, 120))  # lamp
    if ball_x is not None:
        draw.ellipse([ball_x - 7, ball_y - 7, ball_x + 7, ball_y + 7], fill=(220, 20, 60))
    return image


def ball_position(t: float) -> tuple[float, float]:
    """A ball moving right, bouncing on the horizon twice a second."""
    x = 70 + (WIDTH - 85) * t / VIDEO_SECONDS
    phase = (t * 2) % 1.0
    y = HEIGHT * 2 / 3 - 8 - 60 * 4 * phase * (1 - phase)
    return x, y


def bounce_track(seconds: float, rate: int) -> np.ndarray:
    """Soft waves and a short beep at each bounce (every 0.5 s)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    noise = np.convolve(rng.standard_normal(t.size), np.ones(64) / 64, mode="same") * 0.3
    track = noise * (0.6 + 0.4 * np.sin(2 * math.pi * 0.5 * t))
    for bounce in np.arange(0.0, seconds, 0.5):
        mask = (t >= bounce) & (t < bounce + 0.08)
        track[mask] += 0.5 * np.sin(2 * math.pi * 880 * (t[mask] - bounce)) * np.exp(-30 * (t[mask] - bounce))
    return (track / max(1e-9, np.abs(track).max()) * 0.8).astype(np.float32)


def resonator(signal: np.ndarray, frequency: float, bandwidth: float, rate: int) -> np.ndarray:
    """Two-pole formant filter (Klatt style)."""
    r = math.exp(-math.pi * bandwidth / rate)
    c1, c2 = 2 * r * math.cos(2 * math.pi * frequency / rate), -r * r
    gain = 1 - c1 - c2
    out = np.zeros_like(signal)
    y1 = y2 = 0.0
    for i, x in enumerate(signal):
        y = gain * x + c1 * y1 + c2 * y2
        out[i] = y
        y2, y1 = y1, y
    return out


def speech_like(text: str = "a-i-u-e-o-a", rate: int = AUDIO_RATE) -> np.ndarray:
    """One syllable per vowel: a pitch-gliding pulse train through that vowel's three formants."""
    rng = np.random.default_rng(1)
    pieces = []
    for index, vowel in enumerate(text.split("-")):
        duration = 0.28
        n = int(duration * rate)
        t = np.arange(n) / rate
        pitch = 125 + 25 * math.sin(index * 1.3) - 30 * t / duration  # falling intonation per syllable
        phase = np.cumsum(pitch / rate)
        pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)
        source = pulses + 0.02 * rng.standard_normal(n)  # a little breath
        voiced = sum(resonator(source, f, bw, rate) * g
                     for f, bw, g in zip(VOWELS[vowel], (80, 100, 120), (1.0, 0.6, 0.3), strict=True))
        envelope = np.minimum(1.0, np.minimum(t / 0.03, (duration - t) / 0.06))
        pieces += [voiced * envelope, np.zeros(int(0.06 * rate))]
    audio = np.concatenate([np.zeros(int(0.1 * rate)), *pieces])
    return (audio / np.abs(audio).max() * 0.7).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes((audio * 32767).astype("<i2").tobytes())


def write_video(path: Path) -> None:
    import av

    audio_rate = 22_050
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("mpeg4", rate=VIDEO_FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.bit_rate = 200_000
        audio = container.add_stream("aac", rate=audio_rate)
        audio.layout = "mono"
        audio.bit_rate = 48_000
        for index in range(VIDEO_FPS * VIDEO_SECONDS):
            frame = av.VideoFrame.from_image(draw_scene(*ball_position(index / VIDEO_FPS)))
            frame.pts, frame.time_base = index, Fraction(1, VIDEO_FPS)
            for packet in video.encode(frame):
                container.mux(packet)
        samples = bounce_track(VIDEO_SECONDS, audio_rate)
        chunk = 1024
        for start in range(0, samples.size, chunk):
            piece = samples[start : start + chunk]
            frame = av.AudioFrame.from_ndarray(piece[None, :], format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = audio_rate, start, Fraction(1, audio_rate)
            for packet in audio.encode(frame):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)


def main() -> None:
    draw_scene(*ball_position(0.4)).save(HERE / "image.png", optimize=True)
    write_wav(HERE / "speech.wav", speech_like(), AUDIO_RATE)
    write_video(HERE / "video.mp4")
    for name in ("image.png", "speech.wav", "video.mp4"):
        print(f"{name}: {(HERE / name).stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
