"""The engine with media equals transformers: greedy tokens of the Qwen2.5-Omni thinker and Qwen2.5-VL for
image, several images, video, audio, image + audio + video, audio in video, all batched together, with a token
budget small enough that prefill chunks start and end inside media items (CPU, fp32, tiny checkpoints)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from hf_compat import audio_in_video_kwargs
from mm_test_media import frames, image, mp4_with_audio, speech
from omniserve.encoders.video_io import VideoOptions, load_video

from omniserve import Omni, SamplingParams

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

IMG = "<|vision_bos|><|IMAGE|><|vision_eos|>"
AUD = "<|audio_bos|><|AUDIO|><|audio_eos|>"
VID = "<|vision_bos|><|VIDEO|><|vision_eos|>"
VL_IMG = "<|vision_start|><|image_pad|><|vision_end|>"
VL_VID = "<|vision_start|><|video_pad|><|vision_end|>"
NEW_TOKENS = 6
# Small budget and pool: chunks cut through items, embeddings are reused across chunks, pages are reused.
ENGINE = dict(
    dtype="float32", block_size=4, num_kv_blocks=400, max_num_batched_tokens=24, max_num_encoder_tokens=40
)


def quiet(loader, *args, **kwargs):
    from transformers.utils import logging

    previous = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return loader(*args, **kwargs)
    finally:
        logging.set_verbosity(previous)


@pytest.fixture(scope="module")
def omni(tmp_path_factory):
    from transformers import AutoProcessor, Qwen2_5OmniForConditionalGeneration

    from omniserve.demo_omni import build_qwen2_5_omni_checkpoint

    path = build_qwen2_5_omni_checkpoint(
        tmp_path_factory.mktemp("omni-parity") / "ckpt", seed=7, weight_scale=4.0
    )
    model = quiet(Qwen2_5OmniForConditionalGeneration.from_pretrained, path, dtype=torch.float32).eval()
    return path, model, quiet(AutoProcessor.from_pretrained, path)


@pytest.fixture(scope="module")
def vl(tmp_path_factory):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from omniserve.demo_omni import build_qwen2_5_vl_checkpoint

    path = build_qwen2_5_vl_checkpoint(
        tmp_path_factory.mktemp("vl-parity") / "ckpt", seed=7, weight_scale=4.0
    )
    model = quiet(Qwen2_5_VLForConditionalGeneration.from_pretrained, path, dtype=torch.float32).eval()
    return path, model, quiet(AutoProcessor.from_pretrained, path)


def hf_generate(
    model, processor, text: str, hf_kwargs: dict[str, Any], generate_kwargs: dict[str, Any]
) -> list[int]:
    inputs = processor(text=text, return_tensors="pt", **hf_kwargs)
    generator = model.thinker if hasattr(model, "thinker") else model
    with torch.no_grad():
        out = generator.generate(
            **inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, **generate_kwargs
        )
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def omni_cases(processor) -> dict[str, tuple[str, dict, dict, dict, dict]]:
    """name -> (text, our multi_modal_data, our mm_processor_kwargs, HF processor and generate kwargs)"""
    clip = mp4_with_audio(num_frames=12, fps=4, audio_seconds=3.0)
    decoded = load_video(clip, VideoOptions(fps=2.0, load_audio=True))
    return {
        "image": (f"Look: {IMG} what?", {"image": image(60, 90)}, {}, {"images": [image(60, 90)]}, {}),
        "two_images": (
            f"{IMG} and {IMG}",
            {"image": [image(60, 90, 1), image(120, 40, 2)]},
            {},
            {"images": [image(60, 90, 1), image(120, 40, 2)]},
            {},
        ),
        "video": (f"{VID} hi", {"video": frames(6)}, {}, {"videos": [frames(6)]}, {}),
        "audio": (f"{AUD} say", {"audio": (speech(3.0), 16000)}, {}, {"audio": [speech(3.0)]}, {}),
        "image_audio_video": (
            f"{AUD}{IMG} x {VID}{IMG}",
            {
                "image": [image(60, 90), image(30, 30, 3)],
                "audio": [(speech(1.3), 16000)],
                "video": [frames(4)],
            },
            {},
            {"images": [image(60, 90), image(30, 30, 3)], "videos": [frames(4)], "audio": [speech(1.3)]},
            {},
        ),
        "audio_in_video": (
            f"{AUD} then {VID} end",
            {"video": clip, "audio": (speech(1.0, seed=5), 16000)},
            {"use_audio_in_video": True, "fps": 2.0},
            {
                "videos": [decoded.frames],
                "audio": [speech(1.0, seed=5), decoded.audio],
                "videos_kwargs": {"fps": 2.0},
                **audio_in_video_kwargs(processor, [None, 0]),
            },
            {"use_audio_in_video": True},
        ),
    }


def test_omni_thinker_matches_transformers_batched_and_chunked(omni) -> None:
    path, model, processor = omni
    cases = omni_cases(processor)
    expected = {
        name: quiet(hf_generate, model, processor, text, hf_kw, gen_kw)
        for name, (text, _, _, hf_kw, gen_kw) in cases.items()
    }
    engine = Omni(str(path), **ENGINE)
    prompts = [
        {"prompt": text, "multi_modal_data": data, "mm_processor_kwargs": kwargs}
        for text, data, kwargs, _, _ in cases.values()
    ]
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    outputs = engine.generate(prompts, params)
    assert {name: out.token_ids for name, out in zip(cases, outputs, strict=True)} == expected
    assert engine.stats().num_kv_blocks_free == engine.stats().num_kv_blocks_total
    # Repeat the most recently finished prompts (the least recently used blocks of the small pool are gone):
    # their media hit the encoder cache or, through the media, the prefix cache.
    before = engine.stats()
    again = engine.generate(prompts[-2:], params)
    assert [o.token_ids for o in again] == [expected["image_audio_video"], expected["audio_in_video"]]
    after = engine.stats()
    assert after.prefix_cache_hits > before.prefix_cache_hits


def test_qwen2_5_vl_matches_transformers(vl) -> None:
    from transformers.video_utils import VideoMetadata

    path, model, processor = vl
    # HF's VL processor takes the frame rate from metadata (without it, it assumes 24 fps). Videos whose time
    # positions outrun their spatial extent differ from transformers 5.x, which resumes text at base +
    # max(h', w') there; we keep the original rule (previous max + 1, as trained), see mrope.py.
    video = frames(4)
    cases = {
        "image": (f"Look: {VL_IMG} what?", {"image": image(60, 90)}, {"images": [image(60, 90)]}),
        "video": (
            f"{VL_VID} hi",
            {"video": video},
            {"videos": [video], "video_metadata": [VideoMetadata(total_num_frames=4, fps=2.0)]},
        ),
    }
    expected = {
        name: quiet(hf_generate, model, processor, text, hf_kw, {})
        for name, (text, _, hf_kw) in cases.items()
    }
    engine = Omni(str(path), **ENGINE)
    outputs = engine.generate(
        [
            {"prompt": text, "multi_modal_data": data, "mm_processor_kwargs": {"fps": 2.0}}
            for text, data, _ in cases.values()
        ],
        SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True),
    )
    assert {name: out.token_ids for name, out in zip(cases, outputs, strict=True)} == expected
