"""Log-mel features equal transformers' WhisperFeatureExtractor as Qwen2.5-Omni calls it; frame counts,
attention masks, packing and audio token counts equal the Omni processor's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hf_compat import audio_encoder_output_lengths
from omniserve.encoders.audio_features import (
    AudioFeatureConfig,
    audio_output_length,
    load_audio_feature_config,
    log_mel_spectrogram,
    num_audio_tokens,
    num_mel_frames,
    pack_features,
    pad_features,
)
from omniserve.encoders.media_errors import MediaError

TOLERANCE = 1e-5  # measured: 0.0 (same float32 operations, mel bank built in float64 like HF's)


def speech_like(num_samples: int, seed: int = 0) -> np.ndarray:
    """A chirp plus noise with a loud tail, so that the last frames and the dynamic-range floor matter."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / 16000
    signal = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * rng.standard_normal(num_samples)
    signal[-120:] *= 3.0
    signal[: num_samples // 4] *= 0.001  # a near-silent start
    return signal.astype(np.float32)


@pytest.fixture(scope="module")
def whisper():
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=128)  # chunk_length 30, as the class default


def hf_features(extractor, waveforms: list[np.ndarray]):
    kwargs = {"sampling_rate": 16000, "return_attention_mask": True, "padding": "max_length"}
    return extractor(waveforms, return_tensors="pt", **kwargs)


@pytest.mark.parametrize("num_samples", [400, 16000, 48077, 160001, 479999, 480000, 530000])
def test_log_mel_parity(whisper, num_samples: int) -> None:
    waveform = speech_like(num_samples, seed=num_samples)
    reference = hf_features(whisper, [waveform])
    num_frames = int(reference["attention_mask"].sum())
    ours = log_mel_spectrogram(waveform, AudioFeatureConfig())
    assert ours.num_frames == num_frames == num_mel_frames(num_samples, AudioFeatureConfig())
    assert ours.input_features.shape == (128, num_frames)
    max_error = (ours.input_features - reference["input_features"][0, :, :num_frames]).abs().max().item()
    assert max_error <= TOLERANCE, max_error
    assert ours.num_tokens == audio_output_length(num_frames)


def test_batch_mask_padding_and_packing(whisper) -> None:
    waveforms = [speech_like(23456, seed=1), speech_like(8000, seed=2), speech_like(100000, seed=3)]
    reference = hf_features(whisper, waveforms)
    items = [log_mel_spectrogram(waveform) for waveform in waveforms]
    features, mask = pad_features(items, pad_to=AudioFeatureConfig().nb_max_frames)
    assert features.shape == reference["input_features"].shape == (3, 128, 3000)
    assert torch.equal(mask, reference["attention_mask"].to(torch.int64))
    valid = mask.bool()[:, None, :].expand_as(features)
    assert (features[valid] - reference["input_features"][valid]).abs().max() <= TOLERANCE
    packed, lengths = pack_features(items)  # what the audio tower reads (HF get_audio_features)
    hf_packed = reference["input_features"].permute(0, 2, 1)[reference["attention_mask"].bool()].permute(1, 0)
    assert lengths.tolist() == reference["attention_mask"].sum(-1).tolist()
    assert (packed - hf_packed).abs().max() <= TOLERANCE
    shortest, _ = pad_features(items)
    assert shortest.shape == (3, 128, 625)


def test_truncation_at_chunk_length() -> None:
    from transformers import WhisperFeatureExtractor

    config = AudioFeatureConfig(chunk_length=2)
    extractor = WhisperFeatureExtractor(feature_size=128, chunk_length=2)
    waveform = speech_like(3 * 16000 + 5)
    reference = hf_features(extractor, [waveform])
    ours = log_mel_spectrogram(waveform, config)
    assert ours.num_frames == 200 == int(reference["attention_mask"].sum())
    assert (ours.input_features - reference["input_features"][0]).abs().max() <= TOLERANCE
    assert num_audio_tokens(10**7, config) == 50


def test_token_formula_matches_transformers() -> None:
    from transformers.models.qwen2_5_omni import processing_qwen2_5_omni

    lengths = torch.arange(1, 30001)
    expected = audio_encoder_output_lengths(lengths)  # the audio encoder's count, in every version
    processor_formula = getattr(processing_qwen2_5_omni, "_get_feat_extract_output_lengths", None)
    if processor_formula is not None:  # newer processors have it as a function (5.17 inlines it in __call__)
        assert torch.equal(processor_formula(lengths), expected)
    assert [audio_output_length(int(n)) for n in lengths] == expected.tolist()
    assert audio_output_length(100) == 25  # 1 s of audio: 100 mel frames -> 25 tokens
    config = AudioFeatureConfig(chunk_length=300)  # Qwen2.5-Omni-7B
    assert num_audio_tokens(16000 * 3 + 77, config) == 75
    assert num_audio_tokens(16000 * 400, config) == 7500  # truncated at 300 s


def test_config_from_checkpoints(omni_processor_dir: Path, legacy_omni_dir: Path, tmp_path: Path) -> None:
    assert load_audio_feature_config(omni_processor_dir) == AudioFeatureConfig()  # saved chunk_length 30
    legacy = load_audio_feature_config(legacy_omni_dir)
    assert legacy.chunk_length == 300 and legacy.nb_max_frames == 30000 and legacy.feature_size == 128
    assert load_audio_feature_config(tmp_path) == AudioFeatureConfig()
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"min_pixels": 3136}))  # a VL-only file
    assert load_audio_feature_config(tmp_path) == AudioFeatureConfig()


def test_too_short_audio() -> None:
    with pytest.raises(MediaError, match="too short"):
        log_mel_spectrogram(np.zeros(320, dtype=np.float32))  # 2 mel frames -> 0 tokens
    assert log_mel_spectrogram(np.zeros(321, dtype=np.float32)).num_tokens == 1
    with pytest.raises(MediaError, match="too short"):
        log_mel_spectrogram(np.zeros(0, dtype=np.float32))
