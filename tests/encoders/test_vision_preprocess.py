"""Vision preprocessing equals transformers 5.24's Qwen2-VL image/video processors bit for bit, token counts
come from sizes alone, and the config is read from a checkpoint the way AutoProcessor reads it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from encoder_media_factories import encoded_image, random_image
from hf_compat import vision_size
from omniserve.encoders.image_io import load_image
from omniserve.encoders.media_errors import MediaError
from omniserve.encoders.vision_config import (
    VisionPreprocessConfig,
    load_image_preprocess_config,
    load_video_preprocess_config,
)
from omniserve.encoders.vision_preprocess import (
    num_image_tokens,
    num_video_tokens,
    patchify,
    preprocess_image,
    preprocess_video,
    smart_resize,
)

SMALL_IMAGE = VisionPreprocessConfig(min_pixels=56 * 56, max_pixels=28 * 28 * 160)  # = hf_image_processor
SMALL_VIDEO = VisionPreprocessConfig(min_pixels=56 * 56, max_pixels=28 * 28 * 64)  # = hf_video_processor


IMAGE_SIZES = [(37, 53), (300, 451), (451, 300), (10, 1900), (28, 28), (57, 113), (700, 9)]


@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_image_parity_with_hf(hf_image_processor, size: tuple[int, int]) -> None:
    image = random_image(*size, seed=size[0])
    reference = hf_image_processor(images=[image], return_tensors="pt")
    ours = preprocess_image(image, SMALL_IMAGE)
    assert ours.grid_thw == tuple(reference["image_grid_thw"][0].tolist())
    assert ours.pixel_values.shape == reference["pixel_values"].shape
    assert ours.pixel_values.dtype == torch.float32
    assert torch.equal(ours.pixel_values, reference["pixel_values"])  # max abs error 0
    assert ours.num_tokens == reference["pixel_values"].shape[0] // 4 == num_image_tokens(*size, SMALL_IMAGE)


def test_decoded_exif_jpeg_through_preprocessing_matches_hf(hf_image_processor) -> None:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    upright = load_image(encoded_image(random_image(90, 130), "JPEG", exif=exif.tobytes()))
    reference = hf_image_processor(images=[upright], return_tensors="pt")
    ours = preprocess_image(np.asarray(upright), SMALL_IMAGE)
    assert ours.grid_thw == (1, 10, 6)  # 130 x 90 upright -> 140 x 84
    assert torch.equal(ours.pixel_values, reference["pixel_values"])


@pytest.mark.parametrize("shape", [(4, 37, 53), (5, 120, 90), (1, 64, 64), (7, 200, 300)])
@pytest.mark.parametrize("cap_pixels_per_frame", [False, True])
def test_video_parity_with_hf(shape: tuple[int, int, int], cap_pixels_per_frame: bool) -> None:
    from transformers.models.qwen2_vl import Qwen2VLVideoProcessor

    frames = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    # a small token budget so that the per-frame cap bites
    processor = Qwen2VLVideoProcessor(size=vision_size(56 * 56, 28 * 28 * 64), max_video_tokens=40)
    config = replace(SMALL_VIDEO, cap_pixels_per_frame=cap_pixels_per_frame, max_video_tokens=40)
    reference = processor(videos=[frames], return_tensors="pt", cap_pixels_per_frame=cap_pixels_per_frame)
    ours = preprocess_video(frames, config)
    assert ours.grid_thw == tuple(reference["video_grid_thw"][0].tolist())
    assert ours.grid_thw[0] == -(-shape[0] // 2)  # odd frame counts padded with the last frame
    assert torch.equal(ours.pixel_values, reference["pixel_values_videos"])
    assert ours.num_tokens == num_video_tokens(shape[0], shape[1], shape[2], config)


def test_token_counts_without_pixels_match_hf(hf_image_processor, hf_video_processor) -> None:
    rng = np.random.default_rng(0)
    for height, width in rng.integers(1, 3000, (200, 2)):
        if max(height, width) / min(height, width) > 200:
            continue
        patches = hf_image_processor.get_number_of_image_patches(int(height), int(width))
        assert num_image_tokens(int(height), int(width), SMALL_IMAGE) == patches // 4
        frames = int(rng.integers(1, 40))
        # HF pads odd frame counts with the last frame (test_video_parity_with_hf); 5.17's size-only helper
        # floors them instead (fixed by 5.24), so it is asked about the padded count
        padded = frames + frames % 2
        video_patches = hf_video_processor.get_num_of_video_patches(padded, int(height), int(width), {})
        assert num_video_tokens(frames, int(height), int(width), SMALL_VIDEO) == video_patches // 4


def test_patch_order_is_block_major_over_merge_groups() -> None:
    config = VisionPreprocessConfig(min_pixels=1, max_pixels=10**9, patch_size=2, merge_size=2)
    # frame value = 100 * patch row + patch column, constant inside each 2x2 patch; 8x8 pixels = 4x4 patches
    rows, columns = np.meshgrid(np.arange(8) // 2, np.arange(8) // 2, indexing="ij")
    frame = torch.tensor(100 * rows + columns, dtype=torch.float32).expand(2, 3, 8, 8)  # [T=2, C, H, W]
    pixel_values, grid = patchify(frame, config)
    assert grid == (1, 4, 4) and pixel_values.shape == (16, 3 * 2 * 2 * 2)
    order = [(int(value) // 100, int(value) % 100) for value in pixel_values[:, 0]]
    # merge block (0,0): patches (0,0) (0,1) (1,0) (1,1); then block (0,1): (0,2) (0,3) (1,2) (1,3); ...
    assert order[:8] == [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (0, 3), (1, 2), (1, 3)]
    assert order[8:12] == [(2, 0), (2, 1), (3, 0), (3, 1)]


def test_smart_resize_bounds_and_errors() -> None:
    assert smart_resize(37, 53, 28, 56 * 56, 28 * 28 * 1280) == (56, 84)  # grown to >= 3136 px
    assert smart_resize(1000, 1000, 28, 56 * 56, 28 * 28 * 256) == (448, 448)
    with pytest.raises(MediaError, match="aspect ratio"):
        smart_resize(10, 2500, 28, 56 * 56, 28 * 28 * 1280)
    with pytest.raises(MediaError, match="aspect ratio"):
        preprocess_image(np.zeros((3, 700, 3), dtype=np.uint8), SMALL_IMAGE)
    with pytest.raises(MediaError, match="expected uint8"):
        preprocess_image(np.zeros((30, 30, 3), dtype=np.float32), SMALL_IMAGE)
    with pytest.raises(MediaError, match="no frames"):
        preprocess_video(np.zeros((0, 30, 30, 3), dtype=np.uint8), SMALL_VIDEO)


def test_autoprocessor_classes_and_config_from_a_saved_omni_checkpoint(omni_processor_dir: Path) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(omni_processor_dir)
    # 5.24 picks the torchvision backend for these checkpoints: the class we reproduce bit for bit.
    assert type(processor).__name__ == "Qwen2_5OmniProcessor"
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessor"
    assert type(processor.video_processor).__name__ == "Qwen2VLVideoProcessor"
    saved = json.loads((omni_processor_dir / "processor_config.json").read_text())
    assert {"image_processor", "video_processor", "feature_extractor"} <= saved.keys()
    image_config = load_image_preprocess_config(omni_processor_dir)
    video_config = load_video_preprocess_config(omni_processor_dir)
    assert (image_config.min_pixels, image_config.max_pixels) == (56 * 56, 28 * 28 * 1280)
    assert (video_config.min_pixels, video_config.max_pixels) == (128 * 28 * 28, 768 * 28 * 28)
    assert not video_config.do_sample_frames and video_config.fps is None

    image = random_image(60, 90, seed=7)
    video = np.random.default_rng(1).integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    tokens = "<|vision_bos|><|IMAGE|><|vision_eos|><|vision_bos|><|VIDEO|><|vision_eos|>"
    reference = processor(text=tokens, images=[image], videos=[video], return_tensors="pt")
    ours_image = preprocess_image(image, image_config)
    ours_video = preprocess_video(video, video_config)
    assert torch.equal(ours_image.pixel_values, reference["pixel_values"])
    assert torch.equal(ours_video.pixel_values, reference["pixel_values_videos"])
    ids = reference["input_ids"][0]
    image_id, video_id = processor.tokenizer.convert_tokens_to_ids(
        [processor.image_token, processor.video_token]
    )
    assert (ids == image_id).sum() == ours_image.num_tokens  # (processor.image_token_id is newer than 5.17)
    assert (ids == video_id).sum() == ours_video.num_tokens


def test_legacy_flat_config_and_omni_video_override(legacy_omni_dir: Path) -> None:
    """The released Omni-7B files: images 3136..12845056 px; videos overridden by the processor."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(legacy_omni_dir)
    image_config = load_image_preprocess_config(legacy_omni_dir)
    video_config = load_video_preprocess_config(legacy_omni_dir)
    assert processor.image_processor.size["longest_edge"] == image_config.max_pixels == 12845056
    assert processor.video_processor.size["longest_edge"] == 12845056  # what the file says ...
    assert video_config.max_pixels == 602112  # ... and what a processor call actually uses
    video = np.random.default_rng(2).integers(0, 256, (4, 56, 84, 3), dtype=np.uint8)
    reference = processor(text="<|vision_bos|><|VIDEO|><|vision_eos|>", videos=[video], return_tensors="pt")
    ours = preprocess_video(video, video_config)
    assert ours.grid_thw == tuple(reference["video_grid_thw"][0].tolist()) == (2, 20, 28)
    assert torch.equal(ours.pixel_values, reference["pixel_values_videos"])


def test_qwen2_5_vl_flat_config_keeps_its_video_size_and_defaults(tmp_path: Path) -> None:
    flat = {
        "min_pixels": 3136,
        "max_pixels": 12845056,
        "size": {"shortest_edge": 1, "longest_edge": 2},
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(flat))
    video_config = load_video_preprocess_config(tmp_path)
    assert (video_config.min_pixels, video_config.max_pixels) == (3136, 12845056)  # top-level beats size
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_image_preprocess_config(empty) == VisionPreprocessConfig.image_defaults()
    assert load_video_preprocess_config(empty) == VisionPreprocessConfig.video_defaults()
    with pytest.raises(ValueError, match="resample"):
        VisionPreprocessConfig(min_pixels=1, max_pixels=2, resample=1)
