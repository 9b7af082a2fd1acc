"""Audio loading: wav (the `wave` module) and PyAV-encoded mp3/flac/ogg/opus/m4a, arrays, downmix, 16 kHz
resampling lengths, and each MediaError case."""

from __future__ import annotations

import base64
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio.functional as AF
from encoder_media_factories import (
    AUDIO_FORMATS,
    encoded_audio,
    encoder_available,
    mp4_bytes,
    tone,
    tone_energy_share,
    wav_bytes,
)
from omniserve.encoders.audio_io import load_audio, resample
from omniserve.encoders.media_errors import MediaError


def test_wav_stereo_44k_is_averaged_then_resampled_with_torchaudio() -> None:
    samples = tone(1.0, 44100, channels=2)  # 440 Hz left, 550 Hz right
    audio = load_audio(wav_bytes(samples, 44100))
    assert (audio.sample_rate, audio.source_sample_rate, audio.source_channels) == (16000, 44100, 2)
    assert audio.waveform.dtype == np.float32 and audio.waveform.shape == (16000,)
    pcm = np.round(samples * 32767) / 32768  # what the 16-bit wav holds
    expected = AF.resample(torch.from_numpy(pcm.mean(axis=0).astype(np.float32)), 44100, 16000).numpy()
    np.testing.assert_allclose(audio.waveform, expected, atol=1e-6)
    assert tone_energy_share(audio.waveform, 16000, [440, 550]) > 0.99


@pytest.mark.parametrize(
    ("rate", "num_samples", "expected"),
    [
        (44100, 44100, 16000),
        (44100, 44107, 16003),
        (8000, 8000, 16000),
        (8000, 8001, 16002),
        (16000, 777, 777),
    ],
)
def test_resampled_lengths(rate: int, num_samples: int, expected: int) -> None:
    samples = tone(num_samples / rate, rate)
    assert samples.shape[1] == num_samples
    audio = load_audio((samples[0], rate))
    assert audio.num_samples == expected == math.ceil(num_samples * 16000 / rate)
    assert resample(samples[0], rate).shape == (expected,)


@pytest.mark.parametrize("kind", list(AUDIO_FORMATS))
def test_compressed_formats(kind: str) -> None:
    codec = AUDIO_FORMATS[kind][1]
    if not encoder_available(codec):
        pytest.skip(f"this FFmpeg build has no {codec} encoder")
    audio = load_audio(encoded_audio(kind, seconds=1.0, channels=2))
    assert audio.source_channels == 2 and audio.sample_rate == 16000
    assert abs(audio.num_samples - 16000) < 800  # encoder delay / padding of lossy codecs
    assert tone_energy_share(audio.waveform[2000:14000], 16000, [440, 550]) > 0.8  # ffmpeg vorbis: ~0.9


def test_arrays_in_every_layout() -> None:
    stereo = tone(0.5, 16000, channels=2)  # [2, 8000]
    mono = stereo.mean(axis=0)
    for samples in (stereo, stereo.T, torch.from_numpy(stereo)):
        np.testing.assert_allclose(load_audio((samples, 16000)).waveform, mono, atol=1e-7)
    pcm16 = (stereo[0] * 32767).astype(np.int16)
    np.testing.assert_allclose(load_audio((pcm16, 16000)).waveform, stereo[0], atol=1e-4)
    assert load_audio((pcm16, 16000)).source_channels == 1


def test_sources_path_and_data_url(tmp_path: Path) -> None:
    wav = wav_bytes(tone(0.25, 16000), 16000)
    path = tmp_path / "a.wav"
    path.write_bytes(wav)
    data_url = "data:audio/wav;base64," + base64.b64encode(wav).decode()
    for source in (path, str(path), data_url, wav):
        assert load_audio(source).num_samples == 4000


def test_audio_track_of_an_mp4() -> None:
    audio = load_audio(mp4_bytes(10, 10, audio_seconds=1.0))
    assert abs(audio.num_samples - 16000) < 800 and audio.source_channels == 2


def test_errors() -> None:
    wav = wav_bytes(tone(1.0, 16000), 16000)
    with pytest.raises(MediaError, match="audio 2: corrupt"):
        load_audio(b"RIFF\x00\x00\x00\x00WAVEfmt garbage garbage", item="audio 2")
    with pytest.raises(MediaError, match="corrupt"):
        load_audio(wav[:30])  # header cut in the middle
    with pytest.raises(MediaError, match="zero length"):
        load_audio(wav_bytes(tone(0.0, 16000), 16000))
    with pytest.raises(MediaError, match="zero length"):
        load_audio((np.zeros(0, dtype=np.float32), 16000))
    with pytest.raises(MediaError, match="over the limit of 0.5 s|longer than the limit of 0.5 s"):
        load_audio(wav, max_seconds=0.5)
    with pytest.raises(MediaError, match="over the limit of 0.5 s"):
        load_audio((np.zeros(16000, dtype=np.float32), 16000), max_seconds=0.5)
    with pytest.raises(MediaError, match="unsupported or unrecognized audio format"):
        load_audio(b"definitely not audio" * 10)
    with pytest.raises(MediaError, match="no audio stream"):
        load_audio(mp4_bytes(4, 10))
    with pytest.raises(MediaError, match="NaN"):
        load_audio((np.full(100, np.nan, dtype=np.float32), 16000))
    with pytest.raises(MediaError, match="sample rate"):
        load_audio((np.zeros(100, dtype=np.float32), 0))
    with pytest.raises(MediaError, match="shape"):
        load_audio((np.zeros((2, 2, 2), dtype=np.float32), 16000))
