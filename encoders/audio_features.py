"""Whisper log-mel features for the Qwen2-Audio / Qwen2.5-Omni audio tower, computed with torch.

In: a mono float32 waveform at 16 kHz ([S], from `audio_io.load_audio`) and an `AudioFeatureConfig`
(read from the checkpoint by `load_audio_feature_config`). Out: `AudioFeatures`: the log-mel frames the
model reads, [n_mels, L] with L = ceil(min(S, n_samples) / hop), and the number of audio placeholder
tokens ((L - 1) // 2 + 1 - 2) // 2 + 1.

Equal to transformers 5.24's `WhisperFeatureExtractor` as `Qwen2_5OmniProcessor` calls it
(padding="max_length", truncation on, return_attention_mask): HF zero-pads every item to n_samples
(= chunk_length * 16000 samples), runs torch.stft (hann 400, hop 160, centered, reflect), drops the last
frame, applies a slaney mel bank, log10 with a 1e-10 floor, floors at the item's max - 8, maps
x -> (x + 4) / 4, and marks the first L frames in `feature_attention_mask`. The model keeps only those
(`input_features[mask]`). Here only the frames that touch the audio are computed (the item padded with
n_fft zeros, or to n_samples when that is shorter), which gives the same L frames and the same max.
Audio longer than chunk_length seconds is truncated, as HF does.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omniserve.encoders.media_errors import MediaError

LOG_FLOOR = 1e-10  # mel power floor before log10
DYNAMIC_RANGE = 8.0  # log10 units kept below the item's maximum


@dataclass(frozen=True)
class AudioFeatureConfig:
    feature_size: int = 128  # mel bins (Qwen2-Audio / Qwen2.5-Omni: 128; Whisper's class default is 80)
    sampling_rate: int = 16000  # Hz the waveform must have
    hop_length: int = 160  # samples between frames: 100 frames per second
    n_fft: int = 400  # window and FFT size (25 ms)
    chunk_length: int = 30  # seconds kept per item; WhisperFeatureExtractor default 30, Qwen2.5-Omni-7B 300
    dither: float = 0.0  # std of Gaussian noise added before the STFT (0: none, deterministic)

    @property
    def n_samples(self) -> int:
        """Samples an item is padded / truncated to."""
        return self.chunk_length * self.sampling_rate

    @property
    def nb_max_frames(self) -> int:
        """Mel frames of a full-length item (HF pads `input_features` to this)."""
        return self.n_samples // self.hop_length

    @classmethod
    def from_hf_dict(cls, values: dict[str, Any]) -> AudioFeatureConfig:
        names = ("feature_size", "sampling_rate", "hop_length", "n_fft", "chunk_length")
        fields: dict[str, Any] = {name: int(values[name]) for name in names if values.get(name) is not None}
        return replace(cls(), **fields, dither=float(values.get("dither") or 0.0))


@dataclass(frozen=True)
class AudioFeatures:
    input_features: torch.Tensor  # [feature_size, num_frames] float32 log-mel, valid frames only
    num_frames: int  # L: mel frames of the audio, = HF feature_attention_mask.sum()
    num_tokens: int  # audio placeholder tokens: audio_output_length(L)


def load_audio_feature_config(checkpoint_dir: str | Path) -> AudioFeatureConfig:
    """processor_config.json["feature_extractor"] -> preprocessor_config.json -> defaults (5.24 order)."""
    folder = Path(checkpoint_dir)
    for name, key in (("processor_config.json", "feature_extractor"), ("preprocessor_config.json", None)):
        path = folder / name
        if not path.is_file():
            continue
        with open(path, encoding="utf-8") as file:
            values = json.load(file)
        values = values.get(key) if key else values
        if isinstance(values, dict) and (values.get("feature_extractor_type") or values.get("feature_size")):
            return AudioFeatureConfig.from_hf_dict(values)
    return AudioFeatureConfig()


def num_mel_frames(num_samples: int, config: AudioFeatureConfig) -> int:
    """L for an item of `num_samples` samples: ceil(min(S, n_samples) / hop)."""
    return -(-min(num_samples, config.n_samples) // config.hop_length)


def audio_output_length(num_frames: int) -> int:
    """Audio tower outputs (= placeholder tokens) for L mel frames: conv stride 2, then pooling by 2.
    `_get_feat_extract_output_lengths` of transformers' Qwen2.5-Omni (processor and audio encoder)."""
    after_conv = (num_frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


def num_audio_tokens(num_samples: int, config: AudioFeatureConfig) -> int:
    """Placeholder tokens of an item of `num_samples` samples at 16 kHz, without computing features."""
    return audio_output_length(num_mel_frames(num_samples, config))


def _hz_to_slaney_mel(hz: torch.Tensor) -> torch.Tensor:
    """Slaney mel scale: linear below 1 kHz (3 / 200 mel per Hz), logarithmic above."""
    log_step = 27.0 / math.log(6.4)
    return torch.where(hz < 1000.0, 3.0 * hz / 200.0, 15.0 + torch.log(hz / 1000.0) * log_step)


def _slaney_mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    log_step = math.log(6.4) / 27.0
    return torch.where(mel < 15.0, 200.0 * mel / 3.0, 1000.0 * torch.exp(log_step * (mel - 15.0)))


@functools.lru_cache(maxsize=8)
def _mel_filters(config: AudioFeatureConfig, device: torch.device) -> torch.Tensor:
    """[n_mels, n_fft // 2 + 1] float32 slaney-normalised triangular mel bank over 0..8 kHz.

    Built in float64 and rounded once, like transformers' numpy `mel_filter_bank` (torchaudio's
    `melscale_fbanks` is the same formula in float32: its filters differ by ~2e-7, the log-mel by ~2e-5).
    """
    f64 = torch.float64
    fft_hz = torch.linspace(0, config.sampling_rate // 2, config.n_fft // 2 + 1, dtype=f64)  # [F]
    mel_edges = torch.linspace(
        float(_hz_to_slaney_mel(torch.tensor(0.0, dtype=f64))),
        float(_hz_to_slaney_mel(torch.tensor(8000.0, dtype=f64))),
        config.feature_size + 2,
        dtype=f64,
    )
    edge_hz = _slaney_mel_to_hz(mel_edges)  # [n_mels + 2]: filter m rises on [m, m+1], falls on [m+1, m+2]
    widths = edge_hz.diff()  # [n_mels + 1]
    slopes = edge_hz[None, :] - fft_hz[:, None]  # [F, n_mels + 2]
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    bank = torch.clamp(torch.minimum(rising, falling), min=0.0)  # [F, n_mels]
    bank = bank * (2.0 / (edge_hz[2:] - edge_hz[:-2]))  # slaney: each filter has unit area
    return bank.T.to(torch.float32).contiguous().to(device)


@functools.lru_cache(maxsize=8)
def _window(n_fft: int, device: torch.device) -> torch.Tensor:
    return torch.hann_window(n_fft, device=device)  # periodic, as HF's torch path


def log_mel_spectrogram(
    waveform: np.ndarray | torch.Tensor,
    config: AudioFeatureConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    item: str = "audio",
) -> AudioFeatures:
    """[S] float32 at config.sampling_rate -> AudioFeatures (see module doc)."""
    config = config or AudioFeatureConfig()
    device = torch.device(device)
    audio = torch.as_tensor(waveform, dtype=torch.float32).to(device).flatten()
    audio = audio[: config.n_samples]  # truncation=True
    num_samples = int(audio.shape[0])
    num_frames = num_mel_frames(num_samples, config)
    num_tokens = audio_output_length(num_frames)
    if num_tokens < 1:
        raise MediaError(f"audio is too short ({num_samples} samples) to give any audio token", item=item)
    # Frames 0 .. (S + n_fft/2) / hop see the audio; padding S + n_fft zeros shows them the same zeros (and
    # the same reflection at the end) as HF's item padded to n_samples.
    padded = torch.zeros(min(config.n_samples, num_samples + config.n_fft), device=device)
    padded[:num_samples] = audio
    if config.dither:
        padded += config.dither * torch.randn_like(padded)
    window = _window(config.n_fft, device)
    stft = torch.stft(
        padded, config.n_fft, config.hop_length, window=window, return_complex=True
    )  # [F, frames+1]
    power = (stft[..., :-1].abs() ** 2).contiguous()  # [n_fft/2 + 1, frames], last frame dropped as HF
    mel = _mel_filters(config, device) @ power  # [n_mels, frames]
    log_mel = torch.clamp(mel, min=LOG_FLOOR).log10()
    log_mel = torch.maximum(log_mel, log_mel.max() - DYNAMIC_RANGE)
    log_mel = (log_mel + 4.0) / 4.0
    return AudioFeatures(log_mel[:, :num_frames].contiguous(), num_frames, num_tokens)


def pad_features(
    items: Sequence[AudioFeatures], *, pad_to: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch items the HF way -> (input_features [B, n_mels, T], feature_attention_mask [B, T] int64).

    T = pad_to (HF: config.nb_max_frames) or the longest item. Padded frames hold 0.0, not the log-mel of
    silence HF leaves there: the model reads only masked-in frames, so they never matter.
    """
    if not items:
        raise ValueError("no audio features to pad")
    length = pad_to if pad_to is not None else max(item.num_frames for item in items)
    if length < max(item.num_frames for item in items):
        raise ValueError(f"pad_to={length} is shorter than an item")
    n_mels = items[0].input_features.shape[0]
    device = items[0].input_features.device
    features = torch.zeros(len(items), n_mels, length, device=device)
    mask = torch.zeros(len(items), length, dtype=torch.int64, device=device)
    for index, item in enumerate(items):
        features[index, :, : item.num_frames] = item.input_features
        mask[index, : item.num_frames] = 1
    return features, mask


def pack_features(items: Sequence[AudioFeatures]) -> tuple[torch.Tensor, torch.Tensor]:
    """Items as the audio tower consumes them -> (features [n_mels, sum L], feature_lens [B] int64):
    the same as HF's `input_features.permute(0, 2, 1)[feature_attention_mask.bool()].permute(1, 0)`."""
    if not items:
        raise ValueError("no audio features to pack")
    features = torch.cat([item.input_features for item in items], dim=1)
    lengths = torch.tensor([item.num_frames for item in items], dtype=torch.int64)
    return features, lengths


def audio_seconds_to_tokens(seconds: float, config: AudioFeatureConfig | None = None) -> int:
    """Placeholder tokens for `seconds` of audio (rounded to whole samples), for quick estimates."""
    config = config or AudioFeatureConfig()
    return num_audio_tokens(math.ceil(seconds * config.sampling_rate), config)
