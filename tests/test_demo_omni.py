"""The tiny Qwen2.5-Omni / Qwen2.5-VL checkpoints: deterministic, complete (transformers loads them, its
processor works on them, text and speech generation run), ids consistent between tokenizer and config."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from omniserve.demo_omni import (
    CODEC_IDS,
    CODEC_VOCAB_SIZE,
    SPEAKERS,
    build_qwen2_5_omni_checkpoint,
    build_qwen2_5_vl_checkpoint,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def quiet(load, *args, **kwargs):
    from transformers.utils import logging

    previous = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load(*args, **kwargs)
    finally:
        logging.set_verbosity(previous)


@pytest.fixture(scope="module")
def omni(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_qwen2_5_omni_checkpoint(tmp_path_factory.mktemp("demo-omni") / "a", weight_scale=10.0)


@pytest.fixture(scope="module")
def vl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_qwen2_5_vl_checkpoint(tmp_path_factory.mktemp("demo-vl") / "a")


def files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_same_seed_same_bytes(omni: Path, vl: Path, tmp_path: Path) -> None:
    state = torch.random.get_rng_state()
    again = build_qwen2_5_omni_checkpoint(tmp_path / "b", weight_scale=10.0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    assert files(again) == files(omni)
    expected = {"config.json", "generation_config.json", "model.safetensors", "spk_dict.pt", "tokenizer.json"}
    assert expected | {"processor_config.json", "chat_template.jinja"} <= set(files(omni))
    assert files(build_qwen2_5_vl_checkpoint(tmp_path / "c")) == files(vl)
    other = build_qwen2_5_omni_checkpoint(tmp_path / "d", seed=1, weight_scale=10.0)
    assert files(other)["model.safetensors"] != files(omni)["model.safetensors"]


def test_omni_config_ids_match_the_tokenizer(omni: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(omni)
    config = json.loads((omni / "config.json").read_text())
    thinker, talker = config["thinker_config"], config["talker_config"]
    token = tokenizer.convert_tokens_to_ids
    assert thinker["image_token_index"] == token("<|IMAGE|>") == talker["image_token_index"]
    assert thinker["video_token_index"] == token("<|VIDEO|>")
    assert thinker["audio_token_index"] == token("<|AUDIO|>")
    assert (thinker["audio_start_token_id"], thinker["audio_end_token_id"]) == tuple(
        token(["<|audio_bos|>", "<|audio_eos|>"])
    )
    assert (thinker["vision_start_token_id"], thinker["vision_end_token_id"]) == tuple(
        token(["<|vision_bos|>", "<|vision_eos|>"])
    )
    vocab = thinker["text_config"]["vocab_size"]
    tts_ids = [talker[f"tts_text_{name}_token_id"] for name in ("pad", "start", "end")]
    assert len(tokenizer) <= min(tts_ids) and max(tts_ids) < vocab and vocab % 8 == 0
    assert talker["vocab_size"] == CODEC_VOCAB_SIZE and max(CODEC_IDS.values()) < CODEC_VOCAB_SIZE
    assert config["token2wav_config"]["dit_config"]["num_embeds"] >= CODEC_VOCAB_SIZE
    generation = json.loads((omni / "generation_config.json").read_text())
    assert generation["eos_token_id"] == token(["<|im_end|>", "<|endoftext|>"])


def test_omni_loads_and_generates_text_and_speech(omni: Path) -> None:
    from PIL import Image
    from transformers import AutoProcessor, Qwen2_5OmniForConditionalGeneration

    model = quiet(Qwen2_5OmniForConditionalGeneration.from_pretrained, omni).eval()
    assert set(model.speaker_map) == set(SPEAKERS)
    processor = quiet(AutoProcessor.from_pretrained, omni)
    assert type(processor).__name__ == "Qwen2_5OmniProcessor"
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "audio"}, {"type": "text", "text": "hi"}]}
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8))
    sound = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    inputs = quiet(processor, text=text, images=[picture], audio=[sound], return_tensors="pt")
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        text_ids = model.generate(
            **inputs, generation_mode="text", thinker_max_new_tokens=4, thinker_do_sample=False
        )
        assert text_ids.shape[1] == inputs["input_ids"].shape[1] + 4
        _, waveform = model.generate(
            **inputs,
            thinker_max_new_tokens=4,
            thinker_do_sample=False,
            talker_max_new_tokens=8,
            talker_do_sample=False,
            talker_eos_token_id=[CODEC_IDS["end"]],
            token2wav_num_steps=2,
            talker_pixel_values=None,  # speech from image input: the talker takes no pixels
            talker_pixel_values_videos=None,
        )
    assert (
        waveform.ndim == 1 and waveform.numel() % 240 == 0 and waveform.numel() > 0
    )  # 240 samples per mel frame


def test_omni_processor_video_size_is_what_it_applies(omni: Path) -> None:
    """The Omni processor overrides the saved video size on every call: the files say the same values."""
    from omniserve.encoders.vision_config import load_video_preprocess_config
    from transformers import AutoProcessor

    processor = quiet(AutoProcessor.from_pretrained, omni)
    saved = json.loads((omni / "processor_config.json").read_text())["video_processor"]["size"]
    # 5.24 keeps the override in the processor's class-level `videos_kwargs`, 5.17 in its kwargs' `_defaults`
    defaults = getattr(processor, "videos_kwargs", None)
    if defaults is None:
        defaults = processor.valid_processor_kwargs._defaults["videos_kwargs"]
    override = defaults["size"]
    assert saved == override
    config = load_video_preprocess_config(omni)
    assert (config.min_pixels, config.max_pixels) == (override["shortest_edge"], override["longest_edge"])


def test_weight_scale_scales_text_models_only(omni: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    scaled = load_file(omni / "model.safetensors")
    plain = load_file(build_qwen2_5_omni_checkpoint(tmp_path / "plain") / "model.safetensors")
    assert torch.allclose(scaled["thinker.lm_head.weight"], 10 * plain["thinker.lm_head.weight"])
    assert torch.allclose(scaled["talker.codec_head.weight"], 10 * plain["talker.codec_head.weight"])
    tower = [name for name in plain if name.startswith(("thinker.visual.", "thinker.audio_tower."))]
    assert tower and all(torch.equal(scaled[name], plain[name]) for name in tower)


def test_vl_checkpoint_tokenizer_and_processor(vl: Path) -> None:
    from PIL import Image
    from transformers import AutoProcessor, AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    from omniserve.demo import build_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(vl)
    config = json.loads((vl / "config.json").read_text())
    names = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]
    ids = tokenizer.convert_tokens_to_ids(names)
    assert ids == [
        config[key]
        for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    ]
    omni_ids = build_tokenizer().convert_tokens_to_ids(
        ["<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>"]
    )
    assert ids == omni_ids  # same vocabulary, VL names
    assert config["vision_config"]["tokens_per_second"] == 2
    messages = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "hi"}],
        }
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<|vision_start|><|image_pad|><|vision_end|>hi" in text
    processor = quiet(AutoProcessor.from_pretrained, vl)
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    picture = Image.fromarray(np.zeros((56, 56, 3), dtype=np.uint8))
    inputs = quiet(processor, text=text, images=[picture], return_tensors="pt")
    model = quiet(Qwen2_5_VLForConditionalGeneration.from_pretrained, vl).eval()
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], config["text_config"]["vocab_size"])
    assert torch.isfinite(logits).all()
