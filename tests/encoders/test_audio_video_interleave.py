"""The placeholder layout of a video with its audio track equals what Qwen2_5OmniProcessor writes."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hf_compat import audio_in_video_kwargs
from omniserve.encoders.audio_features import AudioFeatureConfig, num_audio_tokens
from omniserve.encoders.audio_video_interleave import PlaceholderRun, audio_in_video_runs, chunk_bounds


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 `copy=` notes inside transformers
@pytest.mark.parametrize(
    ("fps", "audio_seconds"), [(2.0, 5.0), (1.0, 5.0), (0.5, 5.0), (2.0, 1.0), (2.0, 9.0)]
)
def test_runs_match_the_omni_processor(omni_processor_dir: Path, fps: float, audio_seconds: float) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(omni_processor_dir)
    video = np.random.default_rng(0).integers(0, 256, (10, 56, 84, 3), dtype=np.uint8)
    audio = np.random.default_rng(1).standard_normal(int(16000 * audio_seconds) + 33).astype(np.float32) * 0.1
    output = processor(
        text="<|vision_bos|><|VIDEO|><|vision_eos|>",
        videos=[video],
        audio=[audio],
        # the audio above is the track of video 0 (no torchcodec needed)
        **audio_in_video_kwargs(processor, [0]),
        videos_kwargs={"fps": fps},
        return_tensors="pt",
    )
    tokens = processor.tokenizer.convert_ids_to_tokens(output["input_ids"][0].tolist())
    hf_runs = [(token, len(list(group))) for token, group in itertools.groupby(tokens)]
    assert hf_runs[:2] == [("<|vision_bos|>", 1), ("<|audio_bos|>", 1)]
    assert hf_runs[-2:] == [("<|audio_eos|>", 1), ("<|vision_eos|>", 1)]
    names = {"<|VIDEO|>": "video", "<|AUDIO|>": "audio"}
    grid = tuple(output["video_grid_thw"][0].tolist())
    assert output["video_second_per_grid"][0].item() == 2.0 / fps
    ours = audio_in_video_runs(grid, 2, 2.0 / fps, num_audio_tokens(len(audio), AudioFeatureConfig()))
    assert [(names[token], count) for token, count in hf_runs[2:-2]] == [(r.modality, r.count) for r in ours]


def test_runs_by_hand() -> None:
    # 3 temporal patches of 2x2 merged tokens, 1 s each (25 ids); 60 audio tokens; windows of 50 ids
    runs = audio_in_video_runs((3, 4, 4), 2, 1.0, 60)
    video, audio = "video", "audio"
    expected = [(video, 8), (audio, 50), (video, 4), (audio, 10)]
    assert runs == [PlaceholderRun(modality, count) for modality, count in expected]
    assert chunk_bounds(np.array([0, 0, 100, 100]), 50) == [(0, 2), (2, 3), (3, 4)]  # HF's one-window step
