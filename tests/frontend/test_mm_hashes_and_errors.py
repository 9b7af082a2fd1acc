"""Content hashes (equal media -> equal hash, anything else -> different), every bad input a clear
ValueError naming the item, MediaLimits, and the wiring into InputProcessor."""

from __future__ import annotations

import base64
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from mm_test_media import data_url, frames, image, mp4_with_audio, png_bytes, speech, wav_bytes
from omniserve.encoders.media_errors import MediaError
from omniserve.encoders.media_prepare import MediaPreparer

from omniserve.core.engine_core import ModelInfo
from omniserve.frontend.input_processor import InputProcessor
from omniserve.frontend.media_limits import MediaLimits
from omniserve.frontend.multimodal_processor import MultimodalProcessor, build_multimodal_processor
from omniserve.sampling_params import SamplingParams

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

IMG = "<|vision_bos|><|IMAGE|><|vision_eos|>"
AUD = "<|audio_bos|><|AUDIO|><|audio_eos|>"
VID = "<|vision_bos|><|VIDEO|><|vision_eos|>"


def one_hash(processor, text: str, data: dict, kwargs: dict | None = None) -> bytes:
    prompt = {"prompt": text, "multi_modal_data": data, "mm_processor_kwargs": kwargs or {}}
    (item,) = processor.process(prompt).mm_items
    assert len(item.content_hash) == 16
    return item.content_hash


def test_equal_media_hash_equal_whatever_the_source_form(omni_mm, tmp_path: Path) -> None:
    encoded = png_bytes(image(60, 90))
    path = tmp_path / "picture.png"
    path.write_bytes(encoded)
    forms = [encoded, data_url(encoded, "image/png"), str(path), path, f"file://{path}"]
    hashes = {one_hash(omni_mm, IMG, {"image": form}) for form in forms}
    assert len(hashes) == 1
    assert one_hash(omni_mm, IMG, {"image": image(60, 90)}) == one_hash(
        omni_mm, IMG, {"image": image(60, 90)}
    )
    assert one_hash(omni_mm, IMG, {"image": png_bytes(image(60, 90, seed=1))}) not in hashes


def test_hash_changes_with_media_and_options(omni_mm) -> None:
    clip = frames(6)
    base = one_hash(omni_mm, VID, {"video": clip})
    assert one_hash(omni_mm, VID, {"video": clip.copy()}) == base
    assert one_hash(omni_mm, VID, {"video": frames(6, seed=1)}) != base
    assert one_hash(omni_mm, VID, {"video": clip}, {"fps": 1.0}) != base  # other time positions
    sound = speech(1.0)
    audio = one_hash(omni_mm, AUD, {"audio": (sound, 16000)})
    assert one_hash(omni_mm, AUD, {"audio": (sound.copy(), 16000)}) == audio
    assert one_hash(omni_mm, AUD, {"audio": (sound, 8000)}) != audio
    assert one_hash(omni_mm, AUD, {"audio": wav_bytes(sound)}) != audio  # other bytes (16-bit PCM)
    mp4 = mp4_with_audio(8, 4, 2.0)
    plain = one_hash(omni_mm, VID, {"video": mp4})
    with_audio = one_hash(omni_mm, VID, {"video": mp4}, {"use_audio_in_video": True})
    assert plain != with_audio
    assert one_hash(omni_mm, VID, {"video": mp4}, {"use_audio_in_video": True}) == with_audio


def test_hash_differs_between_modalities_of_the_same_bytes(omni_mm) -> None:
    clip = frames(2, 56, 56)
    as_video = one_hash(omni_mm, VID, {"video": clip})
    as_image = one_hash(omni_mm, IMG, {"image": clip[0]})
    assert as_video != as_image


BAD_PROMPTS = {
    "more items than placeholders": (
        {"prompt": IMG, "multi_modal_data": {"image": [image(30, 30), image(30, 30)]}},
        "1 image placeholder.*2 image item",
    ),
    "fewer items than placeholders": (
        {"prompt": IMG + IMG, "multi_modal_data": {"image": image(30, 30)}},
        "2 image placeholder.*1 image item",
    ),
    "placeholder without media": ({"prompt": f"hi {AUD}"}, "1 audio placeholder.*0 audio item"),
    "corrupt image header": (
        {"prompt": IMG, "multi_modal_data": {"image": png_bytes(image(30, 30))[:20]}},
        "image 0: ",
    ),
    "not an image": (
        {"prompt": IMG, "multi_modal_data": {"image": b"hello, not a picture"}},
        "image 0: unsupported",
    ),
    "zero-length audio": (
        {"prompt": AUD, "multi_modal_data": {"audio": (np.zeros(0, np.float32), 16000)}},
        "audio 0: audio has no samples",
    ),
    "too short audio": (
        {"prompt": AUD, "multi_modal_data": {"audio": (np.zeros(100, np.float32), 16000)}},
        "audio 0: audio is too short",
    ),
    "corrupt audio": (
        {"prompt": AUD, "multi_modal_data": {"audio": b"RIFF....WAVEfmt garbage"}},
        "audio 0: ",
    ),
    "video without frames": (
        {"prompt": VID, "multi_modal_data": {"video": np.zeros((0, 56, 56, 3), np.uint8)}},
        "video 0: video has no frames",
    ),
    "video of floats": (
        {"prompt": VID, "multi_modal_data": {"video": np.zeros((2, 56, 56, 3), np.float32)}},
        "video 0: expected uint8",
    ),
    "corrupt video": (
        {"prompt": VID, "multi_modal_data": {"video": b"\x00\x00\x00\x18ftypmp42 broken"}},
        "video 0: ",
    ),
    "unknown modality": ({"prompt": "x", "multi_modal_data": {"pointcloud": [1]}}, "not \\['pointcloud'\\]"),
    "unknown kwargs": (
        {"prompt": "x", "mm_processor_kwargs": {"max_pixels": 5}},
        "unknown mm_processor_kwargs",
    ),
    "bad fps": ({"prompt": VID, "mm_processor_kwargs": {"fps": -1}}, "fps must be a number"),
    "frames array for audio in video": (
        {
            "prompt": VID,
            "multi_modal_data": {"video": frames(4)},
            "mm_processor_kwargs": {"use_audio_in_video": True},
        },
        "video 0: use_audio_in_video needs the audio track",
    ),
    "missing file": (
        {"prompt": IMG, "multi_modal_data": {"image": "/nonexistent/picture.png"}},
        "file not found",
    ),
    "remote url": (
        {"prompt": IMG, "multi_modal_data": {"image": "https://example.com/a.png"}},
        "remote URLs",
    ),
    "media twice": (
        {"messages": [{"role": "user", "content": "hi"}], "multi_modal_data": {"image": image(30, 30)}},
        "not both",
    ),
    "unsupported audio format": (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "xyz"}}],
                }
            ]
        },
        "audio 0: unsupported audio format 'xyz'",
    ),
    "bad base64": (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "input_audio", "input_audio": {"data": "@@@", "format": "wav"}}],
                }
            ]
        },
        "audio 0: input_audio.data is not valid base64",
    ),
    "image_url without url": (
        {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        "image 0: image_url needs a url",
    ),
    "unknown part": (
        {"messages": [{"role": "user", "content": [{"type": "hologram"}]}]},
        "unknown content part",
    ),
    "file part": (
        {"messages": [{"role": "user", "content": [{"type": "file", "file": {}}]}]},
        "resolved by the API",
    ),
    "no prompt": ({"multi_modal_data": {"image": image(30, 30)}}, "needs one of"),
}


@pytest.mark.parametrize("name", sorted(BAD_PROMPTS))
def test_bad_input_is_a_clear_value_error(name: str, omni_mm) -> None:
    prompt, message = BAD_PROMPTS[name]
    with pytest.raises(ValueError, match=message):
        omni_mm.process(prompt)


def test_corrupt_pixel_data_is_found_where_the_item_is_prepared(omni_mm) -> None:
    """A truncated PNG has a sound header: the frontend plans it from the header alone (no decoding), and
    the encoder side's preparation fails the item with a MediaError naming it. Its store file is freed."""
    prompt = {"prompt": IMG, "multi_modal_data": {"image": png_bytes(image(30, 30))[:60]}}
    processed = omni_mm.process(prompt)
    (item,) = processed.mm_items
    assert item.plan.source.kind == "encoded" and Path(item.plan.source.path).is_file()
    planner = omni_mm.planner
    preparer = MediaPreparer(planner.image_config, planner.video_config, planner.audio_config)
    with pytest.raises(MediaError, match="image 0: corrupt or truncated image data"):
        preparer.prepare(item.plan)
    omni_mm.store.release(processed.media_lease)
    assert not Path(item.plan.source.path).exists()
    with pytest.raises(MediaError, match="image 0: the media source is gone"):
        preparer.prepare(item.plan)


def test_store_files_are_shared_by_equal_sources_and_freed_with_the_last_lease(omni_mm, tmp_path) -> None:
    """Bytes and arrays are written once per content; a caller's file is used in place, never deleted."""
    picture = png_bytes(image(30, 30, 3))
    first = omni_mm.process({"prompt": IMG, "multi_modal_data": {"image": picture}})
    second = omni_mm.process({"prompt": IMG, "multi_modal_data": {"image": picture}})
    path = Path(first.mm_items[0].plan.source.path)
    assert second.mm_items[0].plan.source.path == str(path) and path.read_bytes() == picture
    omni_mm.store.release(first.media_lease)
    assert path.is_file()
    omni_mm.store.release(second.media_lease)
    omni_mm.store.release(second.media_lease)  # idempotent
    assert not path.exists()
    own = tmp_path / "mine.png"
    own.write_bytes(picture)
    third = omni_mm.process({"prompt": IMG, "multi_modal_data": {"image": str(own)}})
    assert third.mm_items[0].plan.source.path == str(own.resolve()) and third.media_lease is None
    sound = omni_mm.process({"prompt": AUD, "multi_modal_data": {"audio": (speech(1.0, seed=11), 16000)}})
    stored = sound.mm_items[0].plan.source
    assert stored.kind == "array" and np.load(stored.path).dtype == np.float32  # decoded once, at 16 kHz
    omni_mm.store.release(sound.media_lease)
    assert own.is_file() and not Path(stored.path).exists()


def test_a_prompt_that_fails_midway_frees_the_files_it_stored(omni_mm) -> None:
    before = omni_mm.store.num_files
    bad = {"prompt": IMG + IMG, "multi_modal_data": {"image": [png_bytes(image(30, 30, 7)), b"not an image"]}}
    with pytest.raises(ValueError, match="image 1: unsupported"):
        omni_mm.process(bad)
    assert omni_mm.store.num_files == before


def test_vl_refuses_audio(vl_mm) -> None:
    with pytest.raises(ValueError, match="takes \\['image', 'video'\\]"):
        vl_mm.process({"prompt": "x", "multi_modal_data": {"audio": (speech(1.0), 16000)}})
    with pytest.raises(ValueError, match="use_audio_in_video is not supported by qwen2_5_vl"):
        vl_mm.process(
            {
                "prompt": "<|vision_start|><|video_pad|><|vision_end|>",
                "multi_modal_data": {"video": frames(4)},
                "mm_processor_kwargs": {"use_audio_in_video": True},
            }
        )


@pytest.fixture(scope="module")
def limited(omni_dir: Path, omni_mm):
    def make(**limits) -> MultimodalProcessor:
        processor = build_multimodal_processor(omni_dir, omni_mm.tokenizer, limits=MediaLimits(**limits))
        assert processor is not None
        return processor

    return make


def test_limits(limited) -> None:
    with pytest.raises(ValueError, match="image 1: image has 40x40 = 1600 pixels, over the limit of 1000"):
        limited(max_image_pixels=1000).process(
            {
                "prompt": IMG + IMG,
                "multi_modal_data": {"image": [png_bytes(image(20, 20)), png_bytes(image(40, 40))]},
            }
        )
    with pytest.raises(ValueError, match="image 0: image has 40x40 pixels, over the limit"):
        limited(max_image_pixels=1000).process(
            {"prompt": IMG, "multi_modal_data": {"image": np.zeros((40, 40, 3), np.uint8)}}
        )
    with pytest.raises(ValueError, match="3 media items, over the limit of 2"):
        limited(max_items=2).process({"prompt": IMG * 3, "multi_modal_data": {"image": [image(30, 30)] * 3}})
    with pytest.raises(ValueError, match="video 0: 6 frames after sampling, over the limit of 4"):
        limited(max_video_frames=4).process({"prompt": VID, "multi_modal_data": {"video": frames(6)}})
    with pytest.raises(ValueError, match="video 0: 6 frames at 2 fps are 3.0 s, over the limit of 2 s"):
        limited(max_video_seconds=2).process({"prompt": VID, "multi_modal_data": {"video": frames(6)}})
    with pytest.raises(ValueError, match="video 0: video is 5.0 s long, over the limit of 2 s"):
        limited(max_video_seconds=2).process(
            {"prompt": VID, "multi_modal_data": {"video": mp4_with_audio(20, 4, 1.0)}}
        )
    with pytest.raises(ValueError, match="audio 0: audio is 3.0 s long, over the limit of 2 s"):
        limited(max_audio_seconds=2).process(
            {"prompt": AUD, "multi_modal_data": {"audio": (speech(3.0), 16000)}}
        )
    with pytest.raises(ValueError, match="max_items must be positive"):
        MediaLimits(max_items=0)


def model_info(path: Path, max_model_len: int = 4096) -> ModelInfo:
    return ModelInfo(
        model_path=path, max_model_len=max_model_len, vocab_size=584, eos_token_ids=(566, 564),
        num_kv_blocks=256, block_size=16,
    )  # fmt: skip


def test_input_processor_delegates_and_validates_the_expanded_prompt(omni_dir: Path, omni_mm) -> None:
    processor = InputProcessor(omni_mm.tokenizer, model_info(omni_dir), omni_mm)
    encoded = base64.b64encode(wav_bytes(speech(2.0))).decode()
    prompt = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "listen"},
                    {"type": "input_audio", "input_audio": {"data": encoded, "format": "wav"}},
                    {"type": "image", "image": image(60, 90)},
                ],
            }
        ]
    }
    request, processed = processor.process("r0", prompt, SamplingParams(max_tokens=8))
    assert request.prompt_token_ids == processed.prompt_token_ids
    assert [item.modality for item in request.mm_items] == ["audio", "image"]
    assert (
        request.mrope_positions is processed.mrope_positions and request.mrope_delta == processed.mrope_delta
    )
    assert request.mrope_positions.shape == (3, len(request.prompt_token_ids))
    short = InputProcessor(omni_mm.tokenizer, model_info(omni_dir, max_model_len=60), omni_mm)
    with pytest.raises(ValueError, match="the prompt has \\d+ tokens but the model's context is 60"):
        short.process("r1", prompt, SamplingParams(max_tokens=8))


def test_text_only_models_refuse_media(checkpoint_factory, omni_mm) -> None:
    from transformers import AutoTokenizer

    path = checkpoint_factory("qwen2-text")
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert build_multimodal_processor(path, tokenizer) is None
    text_only = InputProcessor(tokenizer, replace(model_info(path), vocab_size=584))
    with pytest.raises(ValueError, match="accepts text only"):
        text_only.process(
            "r", {"prompt": IMG, "multi_modal_data": {"image": image(30, 30)}}, SamplingParams()
        )
    parts = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    with pytest.raises(ValueError, match="accepts text only"):
        text_only.process("r", {"messages": [{"role": "user", "content": parts}]}, SamplingParams())


def test_factory_detects_the_family(omni_dir: Path, vl_dir: Path, omni_mm, vl_mm) -> None:
    assert omni_mm.family.model_type == "qwen2_5_omni" and vl_mm.family.model_type == "qwen2_5_vl"
    assert (
        omni_mm.family.mrope.position_id_per_seconds == 25 and vl_mm.family.mrope.position_id_per_seconds == 2
    )
    assert build_multimodal_processor(omni_dir / "missing", omni_mm.tokenizer) is None


def test_a_new_store_removes_the_folders_of_dead_processes(tmp_path) -> None:
    import subprocess
    import sys

    from omniserve.frontend.media_store import MediaStore

    code = "import os; from omniserve.frontend.media_store import MediaStore as S; store = S(); os._exit(0)"
    subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "OMNISERVE_MEDIA_DIR": str(tmp_path)}, check=True
    )
    (orphan,) = list(tmp_path.iterdir())  # exited without its exit hooks
    live = MediaStore(tmp_path)
    assert not orphan.exists() and list(tmp_path.iterdir()) == [live.root]
    live.close()
    assert list(tmp_path.iterdir()) == []
