"""Tiny Qwen2.5-Omni and Qwen2.5-VL checkpoints built offline, for multimodal tests and demos.

    build_qwen2_5_omni_checkpoint(path) -> thinker (text + vision + audio towers), talker, token2wav,
                                           spk_dict.pt, the demo tokenizer, processor configs
    build_qwen2_5_vl_checkpoint(path)   -> Qwen2_5_VLForConditionalGeneration, a tokenizer with the VL token
                                           names, processor configs

Both are saved with transformers' own classes, so `from_pretrained` and `AutoProcessor.from_pretrained`
load them. Same arguments -> bit-identical files; the global torch RNG is left untouched.

Token ids (Omni): the demo tokenizer's ids (`omniserve.demo`), then, past the tokenizer, the talker's
text ids (like the real 151859..151861) and one speaker bos id per speaker:

    [0, 578)     demo tokenizer (bytes, merges, SPECIAL_TOKENS)
    578 579 580  tts_text_pad, tts_text_start, tts_text_end
    581 582      "Chelsie" and "Ethan" bos tokens (spk_dict.pt)
    thinker vocab = 584 (a multiple of 8)

The talker's codec vocabulary is tiny (CODEC_VOCAB_SIZE) with pad/start/end/mask ids near its top.
Weights: the text models (and the talker) are multiplied by `weight_scale` (wider logit margins); the
vision and audio towers are re-drawn at N(0, 1/fan_in) so their attention is peaked, not uniform.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omniserve.demo import SPECIAL_TOKENS, _vocab_and_merges, build_tokenizer

if TYPE_CHECKING:
    import torch
    import transformers
    from torch import nn

SPEAKERS = ("Chelsie", "Ethan")
CODEC_VOCAB_SIZE = 128
CODEC_IDS = {"pad": 120, "start": 121, "end": 122, "mask": 124}  # real: 8292, 8293, 8294, 8296
# mrope_section sums to head_dim / 2 (16 / 2); real: [16, 24, 24] for head_dim 128
TEXT_ROPE = {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]}
# Processor sizes: small images keep tests fast. The Omni processor overrides the video size on every call
# with its class-level videos_kwargs (128..768 merged tokens per frame); we save those same values so the
# files say what happens.
IMAGE_MIN_PIXELS, IMAGE_MAX_PIXELS = 56 * 56, 28 * 28 * 256
OMNI_VIDEO_MIN_PIXELS, OMNI_VIDEO_MAX_PIXELS = 128 * 28 * 28, 768 * 28 * 28
VL_VIDEO_MIN_PIXELS, VL_VIDEO_MAX_PIXELS = 56 * 56, 28 * 28 * 64

# Qwen2-VL / Qwen2.5-VL names of the 14 special tokens, at the same ids as the Omni names in SPECIAL_TOKENS.
VL_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)  # fmt: skip

_VL_CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- elif content -%}{%- for part in content -%}"
    "{%- if part.type == 'text' -%}{{ part.text }}"
    "{%- elif part.type in ['image_url', 'image'] -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif part.type in ['video_url', 'video'] -%}<|vision_start|><|video_pad|><|vision_end|>"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- if not messages or messages[0].role != 'system' -%}"
    "<|im_start|>system{{ '\\n' }}You are a helpful assistant.<|im_end|>{{ '\\n' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "<|im_start|>{{ message.role }}{{ '\\n' }}{{ render(message.content) }}<|im_end|>{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant{{ '\\n' }}{%- endif -%}"
)  # fmt: skip


def build_vl_tokenizer() -> transformers.PreTrainedTokenizerBase:
    """The demo vocabulary with the Qwen2.5-VL special token names (same ids), and a VL chat template."""
    from transformers import AddedToken, Qwen2Tokenizer

    vocab, merges = _vocab_and_merges()
    renamed = dict(zip(SPECIAL_TOKENS, VL_SPECIAL_TOKENS, strict=True))
    vl_vocab = {renamed.get(token, token): index for token, index in vocab.items()}
    tokenizer = Qwen2Tokenizer(
        vocab=vl_vocab,
        merges=list(merges),
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    tokenizer.add_tokens(
        [AddedToken(token, special=True) for token in VL_SPECIAL_TOKENS], special_tokens=True
    )
    tokenizer.chat_template = _VL_CHAT_TEMPLATE
    return tokenizer


def spread_weights(module: nn.Module, generator: torch.Generator) -> None:
    """Matrices ~ N(0, 1 / fan_in), biases ~ N(0, 0.1^2), norm weights ~ 1 + N(0, 0.1^2): peaked attention."""
    import torch

    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.dim() >= 2:
                param.copy_(noise / math.sqrt(param[0].numel()))
            elif name.endswith("bias"):
                param.copy_(noise * 0.1)
            else:
                param.copy_(1 + noise * 0.1)


def _scale(modules: list[nn.Module], weight_scale: float) -> None:
    import torch

    if weight_scale == 1.0:
        return
    with torch.no_grad():
        for module in modules:
            for parameter in module.parameters():
                parameter.mul_(weight_scale)


def _vision_config(depth: int) -> dict[str, Any]:
    # head_dim 16 (divisible by 4 for the 2-D rotary); the last block attends over whole frames
    return dict(
        depth=depth, hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=64, patch_size=14,
        temporal_patch_size=2, spatial_merge_size=2, window_size=112, fullatt_block_indexes=[depth - 1],
    )  # fmt: skip


def _text_config(vocab_size: int, hidden_size: int, num_layers: int, ids: dict[str, int]) -> dict[str, Any]:
    return dict(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=4096, rope_parameters=dict(TEXT_ROPE),
        bos_token_id=ids["endoftext"], eos_token_id=ids["im_end"], pad_token_id=ids["endoftext"],
    )  # fmt: skip


def _generation_config(ids: dict[str, int]) -> transformers.GenerationConfig:
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=ids["endoftext"],
        eos_token_id=[ids["im_end"], ids["endoftext"]],
        pad_token_id=ids["endoftext"],
    )


def _quiet() -> Any:
    """transformers warns that the talker's thinker-side ids lie outside the codec vocabulary: expected."""
    from transformers.utils import logging

    previous = logging.get_verbosity()
    logging.set_verbosity_error()
    return previous


def build_qwen2_5_omni_checkpoint(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    vision_depth: int = 2,
    audio_layers: int = 2,
    weight_scale: float = 1.0,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a random Qwen2.5-Omni (thinker, talker, token2wav, spk_dict.pt) + tokenizer + processor into
    `path` (created if needed); return it. `hidden_size` must stay a multiple of 16 (4 heads, head_dim/2 =
    sum of mrope_section [2, 3, 3] at 64). `dtype` defaults to float32."""
    import torch
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration
    from transformers.utils import logging

    dtype = torch.float32 if dtype is None else dtype
    tokenizer = build_tokenizer()
    tokenizer.model_max_length = 4096
    names = ("<|endoftext|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|IMAGE|>",
             "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>")  # fmt: skip
    keys = (
        "endoftext",
        "im_end",
        "audio",
        "audio_bos",
        "audio_eos",
        "image",
        "video",
        "vision_bos",
        "vision_eos",
    )
    ids = dict(zip(keys, tokenizer.convert_tokens_to_ids(list(names)), strict=True))
    text_pad, text_start, text_end = len(tokenizer), len(tokenizer) + 1, len(tokenizer) + 2
    speaker_bos = {name: text_end + 1 + index for index, name in enumerate(SPEAKERS)}
    vocab_size = -(-(text_end + 1 + len(SPEAKERS)) // 8) * 8
    media_ids = dict(
        audio_token_index=ids["audio"], image_token_index=ids["image"], video_token_index=ids["video"],
        audio_start_token_id=ids["audio_bos"], audio_end_token_id=ids["audio_eos"],
        vision_start_token_id=ids["vision_bos"], vision_end_token_id=ids["vision_eos"],
        position_id_per_seconds=25, seconds_per_chunk=2,
    )  # fmt: skip
    audio_config = dict(
        num_mel_bins=128, encoder_layers=audio_layers, encoder_attention_heads=2, encoder_ffn_dim=48,
        d_model=32, n_window=100, max_source_positions=1500, output_dim=hidden_size,
    )  # fmt: skip
    thinker_config = dict(
        text_config=_text_config(vocab_size, hidden_size, num_hidden_layers, ids),
        vision_config={**_vision_config(vision_depth), "out_hidden_size": hidden_size},
        audio_config=audio_config, user_token_id=tokenizer.convert_tokens_to_ids("user"), **media_ids,
    )  # fmt: skip
    talker_config = dict(
        vocab_size=CODEC_VOCAB_SIZE, embedding_size=hidden_size, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        rope_parameters=dict(TEXT_ROPE), spatial_merge_size=2, max_position_embeddings=4096,
        tts_text_pad_token_id=text_pad, tts_text_start_token_id=text_start, tts_text_end_token_id=text_end,
        tts_codec_pad_token_id=CODEC_IDS["pad"], tts_codec_start_token_id=CODEC_IDS["start"],
        tts_codec_end_token_id=CODEC_IDS["end"], tts_codec_mask_token_id=CODEC_IDS["mask"], **media_ids,
    )  # fmt: skip
    dit_config = dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, head_dim=16, ff_mult=2, emb_dim=32,
        enc_emb_dim=32, enc_dim=32, enc_channels=[32, 32, 32, 32, 96], enc_kernel_sizes=[5, 3, 3, 3, 1],
        enc_dilations=[1, 2, 3, 4, 1], enc_attention_channels=16, enc_se_channels=16,
        num_embeds=CODEC_VOCAB_SIZE, mel_dim=80, block_size=24, look_ahead_layers=[1],
        look_backward_layers=[0],
    )  # fmt: skip
    bigvgan_config = dict(  # 240 samples per mel frame at 24 kHz, as the real rates
        mel_dim=80, upsample_initial_channel=64, resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3, 5]], upsample_rates=[5, 3, 2, 2, 2, 2],
        upsample_kernel_sizes=[11, 7, 4, 4, 4, 4],
    )  # fmt: skip
    previous = _quiet()
    try:
        config = Qwen2_5OmniConfig(
            thinker_config=thinker_config,
            talker_config=talker_config,
            token2wav_config=dict(dit_config=dit_config, bigvgan_config=bigvgan_config),
            enable_audio_output=True,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Qwen2_5OmniForConditionalGeneration(config)
            thinker = model.thinker
            towers = thinker.model if hasattr(thinker.model, "visual") else thinker  # 5.24 vs 5.17 layout
            generator = torch.Generator().manual_seed(seed + 1)
            spread_weights(towers.visual, generator)
            spread_weights(towers.audio_tower, generator)
            text_model = getattr(thinker.model, "language_model", thinker.model)
            _scale([text_model, thinker.lm_head, model.talker], weight_scale)
            speakers = {
                name: {
                    "bos_token": speaker_bos[name],
                    "cond": torch.randn(1, dit_config["enc_emb_dim"], generator=generator),
                    "ref_mel": torch.randn(1, 48, dit_config["mel_dim"], generator=generator),
                }
                for name in SPEAKERS
            }
        model = model.to(dtype).eval()
        model.generation_config = _generation_config(ids)
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(path)
        torch.save(speakers, path / "spk_dict.pt")
        _omni_processor(tokenizer).save_pretrained(path)
    finally:
        logging.set_verbosity(previous)
    return path


def _vision_size(min_pixels: int, max_pixels: int) -> dict[str, int]:
    """`size=` for the Qwen2VL processors: transformers 5.17 turns `min_pixels=` / `max_pixels=` into writes
    to the class-wide default `size`, which every processor built later in the process would inherit."""
    return {"shortest_edge": min_pixels, "longest_edge": max_pixels}


def _omni_processor(tokenizer: transformers.PreTrainedTokenizerBase) -> transformers.ProcessorMixin:
    from transformers import Qwen2_5OmniProcessor, WhisperFeatureExtractor
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    return Qwen2_5OmniProcessor(
        image_processor=Qwen2VLImageProcessor(size=_vision_size(IMAGE_MIN_PIXELS, IMAGE_MAX_PIXELS)),
        video_processor=Qwen2VLVideoProcessor(
            size=_vision_size(OMNI_VIDEO_MIN_PIXELS, OMNI_VIDEO_MAX_PIXELS)
        ),
        feature_extractor=WhisperFeatureExtractor(feature_size=128, return_attention_mask=True),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )


def build_qwen2_5_vl_checkpoint(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    vision_depth: int = 2,
    tokens_per_second: int = 2,
    weight_scale: float = 1.0,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a random Qwen2_5_VLForConditionalGeneration + VL tokenizer + processor into `path`; return it.
    `tokens_per_second` is the vision config's M-RoPE time scale (Qwen2.5-VL-7B: 2)."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor, Qwen2VLVideoProcessor
    from transformers.utils import logging

    dtype = torch.float32 if dtype is None else dtype
    tokenizer = build_vl_tokenizer()
    tokenizer.model_max_length = 4096
    names = (
        "<|endoftext|>",
        "<|im_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
        "<|vision_start|>",
        "<|vision_end|>",
    )
    keys = ("endoftext", "im_end", "image", "video", "vision_start", "vision_end")
    ids = dict(zip(keys, tokenizer.convert_tokens_to_ids(list(names)), strict=True))
    previous = _quiet()
    try:
        config = Qwen2_5_VLConfig(
            text_config=_text_config(-(-len(tokenizer) // 8) * 8, hidden_size, num_hidden_layers, ids),
            vision_config={
                **_vision_config(vision_depth),
                "out_hidden_size": hidden_size,
                "tokens_per_second": tokens_per_second,
            },
            image_token_id=ids["image"],
            video_token_id=ids["video"],
            vision_start_token_id=ids["vision_start"],
            vision_end_token_id=ids["vision_end"],
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Qwen2_5_VLForConditionalGeneration(config)
            spread_weights(model.model.visual, torch.Generator().manual_seed(seed + 1))
            _scale([model.model.language_model, model.lm_head], weight_scale)
        model = model.to(dtype).eval()
        model.generation_config = _generation_config(ids)
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(path)
        processor = Qwen2_5_VLProcessor(
            image_processor=Qwen2VLImageProcessor(size=_vision_size(IMAGE_MIN_PIXELS, IMAGE_MAX_PIXELS)),
            video_processor=Qwen2VLVideoProcessor(
                size=_vision_size(VL_VIDEO_MIN_PIXELS, VL_VIDEO_MAX_PIXELS)
            ),
            tokenizer=tokenizer,
            chat_template=tokenizer.chat_template,
        )
        processor.save_pretrained(path)
    finally:
        logging.set_verbosity(previous)
    return path
