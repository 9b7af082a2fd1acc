"""MultimodalProcessor equals the checkpoint's HF processor (ids, pixel_values, grid_thw, input_features) and
the HF model's get_rope_index, for tiny Qwen2.5-Omni and Qwen2.5-VL checkpoints; hashes and errors."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from hf_compat import audio_in_video_kwargs
from mm_test_media import data_url, frames, image, mp4_with_audio, png_bytes, speech, wav_bytes
from omniserve.encoders.media_prepare import MediaPreparer
from omniserve.encoders.video_io import VideoOptions, load_video

from omniserve.frontend.input_processor import ProcessedPrompt
from omniserve.frontend.multimodal_processor import MultimodalProcessor
from omniserve.multimodal import EncoderInput

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

IMG = "<|vision_bos|><|IMAGE|><|vision_eos|>"
AUD = "<|audio_bos|><|AUDIO|><|audio_eos|>"
VID = "<|vision_bos|><|VIDEO|><|vision_eos|>"
VL_IMG = "<|vision_start|><|image_pad|><|vision_end|>"
VL_VID = "<|vision_start|><|video_pad|><|vision_end|>"


@dataclass
class Case:
    text: str
    images: list[Any] = field(default_factory=list)
    videos: list[np.ndarray] = field(default_factory=list)
    audio: list[np.ndarray] = field(default_factory=list)  # HF order: standalone and video tracks by slot
    fps: float | None = None
    audio_from_video: list[int | None] | None = None  # HF's audio_from_video_indices


def omni_reference(processor, model, case: Case):
    kwargs: dict[str, Any] = {}
    if case.fps is not None:
        kwargs["videos_kwargs"] = {"fps": case.fps}
    if case.audio_from_video is not None:
        kwargs.update(audio_in_video_kwargs(processor, case.audio_from_video))
    ref = processor(
        text=case.text,
        images=case.images or None,
        videos=case.videos or None,
        audio=case.audio or None,
        return_tensors="pt",
        **kwargs,
    )
    mask = ref.get("feature_attention_mask")
    seconds = ref.get("video_second_per_grid")
    positions, delta = model.thinker.get_rope_index(
        ref["input_ids"],
        ref.get("image_grid_thw"),
        ref.get("video_grid_thw"),
        ref["attention_mask"],
        case.audio_from_video is not None,
        mask.sum(-1) if mask is not None else None,
        torch.as_tensor(seconds) if seconds is not None else None,
    )
    return ref, positions[:, 0].numpy(), int(delta.flatten()[0])


def assert_layout(ours: ProcessedPrompt, token_ids: dict[str, int]) -> None:
    """Each item's rows hold its placeholder tokens; audio in video follows its interleave runs."""
    ids = ours.prompt_token_ids
    for item in ours.mm_items:
        rows = ids[item.offset : item.end]
        if item.modality == "video_with_audio":
            runs = item.plan.interleave
            assert [t for tower, _, n in runs for t in [token_ids[tower]] * n] == rows
            for tower in ("video", "audio"):
                starts = [(first, n) for name, first, n in runs if name == tower]
                assert [first for first, _ in starts] == list(np.cumsum([0] + [n for _, n in starts])[:-1])
            assert sum(n for name, _, n in runs if name == "audio") == item.audio_tokens
        else:
            assert rows == [token_ids[item.modality]] * item.num_tokens


def tower_inputs(mm: MultimodalProcessor, ours: ProcessedPrompt) -> list[EncoderInput]:
    """What the encoder side makes of each item's plan (decoded from the media store, as a worker does)."""
    planner = mm.planner
    preparer = MediaPreparer(planner.image_config, planner.video_config, planner.audio_config)
    return [preparer.prepare(item.plan) for item in ours.mm_items]


def assert_matches(
    mm: MultimodalProcessor,
    ours: ProcessedPrompt,
    ref,
    positions,
    delta,
    audio_order: list[int] | None = None,
) -> None:
    """Planned ids, grids and positions, and the tensors prepared from the plans, equal HF's processor."""
    assert ours.prompt_token_ids == ref["input_ids"][0].tolist()
    inputs = tower_inputs(mm, ours)
    for item, prepared in zip(ours.mm_items, inputs, strict=True):
        assert prepared.modality == item.modality and prepared.grid_thw == item.grid_thw
    images = [x for x in inputs if x.modality == "image"]
    videos = [x for x in inputs if x.modality in ("video", "video_with_audio")]
    if images:
        assert torch.equal(torch.cat([x.pixel_values for x in images]), ref["pixel_values"])
        assert [list(x.grid_thw) for x in images] == ref["image_grid_thw"].tolist()
    if videos:
        assert torch.equal(torch.cat([x.pixel_values for x in videos]), ref["pixel_values_videos"])
        assert [list(x.grid_thw) for x in videos] == ref["video_grid_thw"].tolist()
    with_audio = [x for x in inputs if x.features is not None]
    if with_audio:
        order = audio_order if audio_order is not None else range(len(with_audio))
        for ours_index, hf_index in enumerate(order):
            features = with_audio[ours_index].features
            length = int(ref["feature_attention_mask"][hf_index].sum())
            assert features.shape == (128, length)
            assert (features - ref["input_features"][hf_index, :, :length]).abs().max() <= 1e-5
    assert ours.mrope_positions.shape == (3, len(ours.prompt_token_ids))
    assert (ours.mrope_positions == positions).all()
    assert ours.mrope_delta == delta


OMNI_CASES = {
    "one_image": lambda: (Case(f"Look: {IMG} what?", images=[image(60, 90)]), {"image": image(60, 90)}, {}),
    "two_images": lambda: (
        Case(f"{IMG} and {IMG}", images=[image(60, 90, 1), image(120, 40, 2)]),
        {"image": [image(60, 90, 1), image(120, 40, 2)]},
        {},
    ),
    "video_frames": lambda: (Case(f"{VID} hi", videos=[frames(6)]), {"video": frames(6)}, {}),
    "video_fps_1": lambda: (
        Case(f"{VID} hi", videos=[frames(5)], fps=1.0),
        {"video": frames(5)},
        {"fps": 1.0},
    ),
    "audio": lambda: (Case(f"{AUD} say", audio=[speech(3.0)]), {"audio": (speech(3.0), 16000)}, {}),
    "image_audio_video": lambda: (
        Case(f"{AUD}{IMG} x {VID}{IMG}", [image(60, 90), image(30, 30, 3)], [frames(4)], [speech(1.3)]),
        {"image": [image(60, 90), image(30, 30, 3)], "audio": [(speech(1.3), 16000)], "video": [frames(4)]},
        {},
    ),
}


@pytest.mark.parametrize("name", sorted(OMNI_CASES))
def test_omni_matches_hf(name: str, omni_mm, omni_hf_processor, omni_hf_model) -> None:
    case, data, kwargs = OMNI_CASES[name]()
    ours = omni_mm.process({"prompt": case.text, "multi_modal_data": data, "mm_processor_kwargs": kwargs})
    assert_matches(omni_mm, ours, *omni_reference(omni_hf_processor, omni_hf_model, case))
    family = omni_mm.family
    assert_layout(
        ours, {"image": family.image_token_id, "video": family.video_token_id, "audio": family.audio_token_id}
    )


@pytest.mark.parametrize("fps", [2.0, 1.0])
def test_omni_audio_in_video_matches_hf(fps: float, omni_mm, omni_hf_processor, omni_hf_model) -> None:
    clip = mp4_with_audio(num_frames=20, fps=4, audio_seconds=5.0)
    decoded = load_video(clip, VideoOptions(fps=fps, load_audio=True))  # what HF would decode (torchcodec)
    text = f"{AUD} then {VID} end"
    standalone = speech(1.0, seed=5)
    ours = omni_mm.process(
        {
            "prompt": text,
            "multi_modal_data": {"video": clip, "audio": (standalone, 16000)},
            "mm_processor_kwargs": {"use_audio_in_video": True, "fps": fps},
        }
    )
    case = Case(
        text, videos=[decoded.frames], audio=[standalone, decoded.audio], fps=fps, audio_from_video=[None, 0]
    )
    assert_matches(omni_mm, ours, *omni_reference(omni_hf_processor, omni_hf_model, case))
    family = omni_mm.family
    assert_layout(ours, {"video": family.video_token_id, "audio": family.audio_token_id})
    item = ours.mm_items[1]
    assert item.modality == "video_with_audio" and item.plan.modality == "video_with_audio"
    assert ours.prompt_token_ids[item.offset - 2 : item.offset] == [
        family.vision_start_token_id,
        family.audio_start_token_id,
    ]
    assert ours.prompt_token_ids[item.end : item.end + 2] == [
        family.audio_end_token_id,
        family.vision_end_token_id,
    ]
    assert item.seconds_per_grid == 2.0 / fps
    assert len({run[0] for run in item.plan.interleave}) == 2  # really interleaved

    # frames + explicit track give the same layout and tensors as the encoded clip
    explicit = omni_mm.process(
        {
            "prompt": text,
            "multi_modal_data": {
                "video": {"video": decoded.frames, "audio": (decoded.audio, 16000)},
                "audio": (standalone, 16000),
            },
            "mm_processor_kwargs": {"use_audio_in_video": True, "fps": fps},
        }
    )
    assert explicit.prompt_token_ids == ours.prompt_token_ids
    assert explicit.mm_items[1].plan.interleave == item.plan.interleave
    assert (explicit.mrope_positions == ours.mrope_positions).all()


def test_omni_messages_match_hf(omni_mm, omni_hf_processor, omni_hf_model, tmp_path) -> None:
    picture, sound = image(70, 50, 4), speech(2.0, seed=2)
    video_path = tmp_path / "clip.mp4"
    video_path.write_bytes(mp4_with_audio(num_frames=8, fps=4, audio_seconds=2.0))
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(png_bytes(picture), "image/png")}},
                {"type": "text", "text": "and"},
                {
                    "type": "input_audio",
                    "input_audio": {"data": base64.b64encode(wav_bytes(sound)).decode(), "format": "wav"},
                },
                {"type": "video_url", "video_url": {"url": str(video_path)}},
                {"type": "text", "text": "describe"},
            ],
        }
    ]
    ours = omni_mm.process({"messages": messages})
    text = omni_hf_processor.tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    assert ours.prompt == text
    heard = (np.round(sound * 32767).astype(np.int16) / 32768.0).astype(
        np.float32
    )  # the wav's 16-bit samples
    video = load_video(str(video_path)).frames
    case = Case(text, images=[picture], videos=[video], audio=[heard])
    assert_matches(omni_mm, ours, *omni_reference(omni_hf_processor, omni_hf_model, case))


def vl_reference(processor, model, text: str, images=None, videos=None, fps: float = 2.0):
    from transformers.video_utils import VideoMetadata

    metadata = [VideoMetadata(total_num_frames=len(v), fps=fps) for v in videos] if videos else None
    ref = processor(text=text, images=images, videos=videos, video_metadata=metadata, return_tensors="pt")
    positions, delta = model.model.get_rope_index(
        ref["input_ids"],
        ref["mm_token_type_ids"],
        ref.get("image_grid_thw"),
        ref.get("video_grid_thw"),
        ref.get("second_per_grid_ts"),
        ref["attention_mask"],
    )
    return ref, positions[:, 0].numpy(), int(delta.flatten()[0])


def test_vl_image_and_video_match_hf(vl_mm, vl_hf_processor, vl_hf_model) -> None:
    # 4 frames: the temporal ids (0, 2) stay below the spatial extent, see the note in the report on 5.24
    text = f"A {VL_IMG} then {VL_VID} and {VL_IMG}."
    pictures, clip = [image(60, 90, 7), image(100, 64, 8)], frames(4, seed=9)
    ours = vl_mm.process({"prompt": text, "multi_modal_data": {"image": pictures, "video": clip}})
    assert_matches(vl_mm, ours, *vl_reference(vl_hf_processor, vl_hf_model, text, pictures, [clip]))
    assert ours.mm_items[1].seconds_per_grid == 1.0  # tp / sampled fps (2 fps frames)
    family = vl_mm.family
    assert_layout(ours, {"image": family.image_token_id, "video": family.video_token_id})


def test_vl_messages_match_hf(vl_mm, vl_hf_processor, vl_hf_model) -> None:
    picture = image(56, 56, 11)
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is"},
                {"type": "image_url", "image_url": {"url": data_url(png_bytes(picture), "image/png")}},
            ],
        }
    ]
    ours = vl_mm.process({"messages": messages})
    text = vl_hf_processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert VL_IMG in text
    assert_matches(vl_mm, ours, *vl_reference(vl_hf_processor, vl_hf_model, text, [picture]))


def test_text_only_prompts_get_plain_positions(omni_mm) -> None:
    ours = omni_mm.process("Hello world")
    assert ours.mm_items == [] and ours.mrope_delta == 0
    assert (ours.mrope_positions == np.arange(len(ours.prompt_token_ids))).all()
    by_ids = omni_mm.process({"prompt_token_ids": ours.prompt_token_ids})
    assert by_ids.prompt_token_ids == ours.prompt_token_ids


def test_prompt_token_ids_with_media_expand_like_text(omni_mm) -> None:
    data = {"image": image(60, 90), "audio": (speech(1.0), 16000)}
    by_text = omni_mm.process({"prompt": f"a {IMG} b {AUD}", "multi_modal_data": data})
    ids = omni_mm.tokenizer.encode(f"a {IMG} b {AUD}", add_special_tokens=False)
    by_ids = omni_mm.process({"prompt_token_ids": ids, "multi_modal_data": data})
    assert by_ids.prompt_token_ids == by_text.prompt_token_ids
    assert [(i.offset, i.num_tokens, i.content_hash) for i in by_ids.mm_items] == [
        (i.offset, i.num_tokens, i.content_hash) for i in by_text.mm_items
    ]
    assert (by_ids.mrope_positions == by_text.mrope_positions).all()
