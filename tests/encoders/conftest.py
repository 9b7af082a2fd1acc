"""Fixtures of the media/preprocessing tests: transformers' processors built offline, once per session.

The processors are the references our encoders must equal. `omni_processor_dir` is a Qwen2.5-Omni
processor saved by transformers itself (its 5.24 layout: one nested processor_config.json);
`legacy_omni_dir` holds the flat preprocessor_config.json that the released Qwen2.5-Omni-7B checkpoint
ships (chunk_length 300, min/max_pixels 3136/12845056), with the same tokenizer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hf_compat import vision_size

# The preprocessor_config.json of the released Qwen2.5-Omni-7B checkpoint (field values as published).
QWEN2_5_OMNI_7B_PREPROCESSOR = {
    "chunk_length": 300,
    "dither": 0.0,
    "feature_extractor_type": "WhisperFeatureExtractor",
    "feature_size": 128,
    "hop_length": 160,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "Qwen2VLImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "max_pixels": 12845056,
    "merge_size": 2,
    "min_pixels": 3136,
    "n_fft": 400,
    "n_samples": 4800000,
    "nb_max_frames": 30000,
    "padding_side": "right",
    "padding_value": 0.0,
    "patch_size": 14,
    "processor_class": "Qwen2_5OmniProcessor",
    "return_attention_mask": True,
    "sampling_rate": 16000,
    "temporal_patch_size": 2,
}


@pytest.fixture(scope="session")
def hf_image_processor():
    """transformers' Qwen2VLImageProcessor (torchvision backend) with a small max_pixels for speed."""
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor

    return Qwen2VLImageProcessor(size=vision_size(56 * 56, 28 * 28 * 160))


@pytest.fixture(scope="session")
def hf_video_processor():
    from transformers.models.qwen2_vl import Qwen2VLVideoProcessor

    return Qwen2VLVideoProcessor(size=vision_size(56 * 56, 28 * 28 * 64))


@pytest.fixture(scope="session")
def omni_processor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import Qwen2_5OmniProcessor, WhisperFeatureExtractor
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    from omniserve.demo import build_tokenizer

    folder = tmp_path_factory.mktemp("omni-processor")
    # transformers' default bounds, spelled out: in 5.17 a default-built processor inherits the bounds of any
    # processor built earlier in the process with min_pixels=/max_pixels= (omniserve.demo_omni's builders do)
    processor = Qwen2_5OmniProcessor(
        image_processor=Qwen2VLImageProcessor(size=vision_size(56 * 56, 28 * 28 * 1280)),
        video_processor=Qwen2VLVideoProcessor(size=vision_size(128 * 28 * 28, 768 * 28 * 28)),
        feature_extractor=WhisperFeatureExtractor(feature_size=128, return_attention_mask=True),
        tokenizer=build_tokenizer(),
    )
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def legacy_omni_dir(tmp_path_factory: pytest.TempPathFactory, omni_processor_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("omni-legacy")
    for path in omni_processor_dir.iterdir():
        if path.name != "processor_config.json":
            shutil.copy(path, folder / path.name)
    (folder / "preprocessor_config.json").write_text(json.dumps(QWEN2_5_OMNI_7B_PREPROCESSOR, indent=2))
    return folder
