"""What the frontend needs to know about a multimodal checkpoint family, read from its HF config.

In: `hf_config` (transformers config of the checkpoint) and its tokenizer. Out: `MultimodalFamily`: the
placeholder / start / end token ids, the M-RoPE settings and the video time convention. Supported:

    model_type      ids from                       time scale                  seconds per temporal patch
    qwen2_5_omni    thinker_config.*_token_index   position_id_per_seconds     tp / requested fps
    qwen2_5_vl      config.*_token_id              vision tokens_per_second    tp / sampled fps
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omniserve.models.mrope import MRopeConfig

SUPPORTED_MODEL_TYPES = ("qwen2_5_omni", "qwen2_5_vl")


@dataclass(frozen=True)
class MultimodalFamily:
    model_type: str  # "qwen2_5_omni" | "qwen2_5_vl"
    image_token_id: int  # the one placeholder per image in a prompt; expanded to one per embedding row
    video_token_id: int
    audio_token_id: int | None  # None: the family takes no audio
    vision_start_token_id: int  # <|vision_bos|> / <|vision_start|>
    vision_end_token_id: int
    audio_start_token_id: int | None  # <|audio_bos|>: also opens the audio-in-video run
    audio_end_token_id: int | None
    spatial_merge_size: int  # merge_size x merge_size vision patches -> one token
    mrope: MRopeConfig  # M-RoPE / TMRoPE settings for omniserve.models.mrope
    second_per_grid_convention: str  # DecodedVideo.second_per_grid convention

    @property
    def modalities(self) -> tuple[str, ...]:
        return ("image", "video", "audio") if self.audio_token_id is not None else ("image", "video")

    @property
    def supports_audio_in_video(self) -> bool:
        return self.audio_token_id is not None

    def placeholder_token_id(self, modality: str) -> int:
        """The token that repeats once per embedding row of an item ("video_with_audio": the video's)."""
        token_id = {"image": self.image_token_id, "audio": self.audio_token_id}.get(
            modality, self.video_token_id
        )
        if token_id is None:
            raise ValueError(f"{self.model_type} checkpoints take no {modality}")
        return token_id

    def placeholder_ids(self) -> dict[int, str]:
        """Placeholder token id -> modality."""
        ids = {self.image_token_id: "image", self.video_token_id: "video"}
        if self.audio_token_id is not None:
            ids[self.audio_token_id] = "audio"
        return ids


def _get(config: Any, name: str, default: Any = None) -> Any:
    value = getattr(config, name, None)
    return default if value is None else value


def _token_id(config: Any, name: str, tokenizer: Any, token: str) -> int:
    """config.<name>, else the tokenizer's id of `token` (older configs do not save every id)."""
    if getattr(config, name, None) is not None:
        return int(getattr(config, name))
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == getattr(tokenizer, "unk_token_id", None):
        raise ValueError(f"the tokenizer has no {token!r} token, which this multimodal checkpoint needs")
    return int(token_id)


def family_from_config(hf_config: Any, tokenizer: Any) -> MultimodalFamily:
    """The family of `hf_config`; ValueError for model types we do not serve with media."""
    model_type = getattr(hf_config, "model_type", None)
    if model_type == "qwen2_5_omni":
        thinker = hf_config.thinker_config
        merge = int(_get(thinker.vision_config, "spatial_merge_size", 2))
        per_second = float(_get(thinker, "position_id_per_seconds", 25))
        return MultimodalFamily(
            model_type=model_type,
            image_token_id=int(thinker.image_token_index),
            video_token_id=int(thinker.video_token_index),
            audio_token_id=int(thinker.audio_token_index),
            # not declared fields of the thinker config (get_rope_index reads them): fall back to the names
            vision_start_token_id=_token_id(thinker, "vision_start_token_id", tokenizer, "<|vision_bos|>"),
            vision_end_token_id=_token_id(thinker, "vision_end_token_id", tokenizer, "<|vision_eos|>"),
            audio_start_token_id=int(thinker.audio_start_token_id),
            audio_end_token_id=int(thinker.audio_end_token_id),
            spatial_merge_size=merge,
            mrope=MRopeConfig(
                spatial_merge_size=merge,
                position_id_per_seconds=per_second,
                seconds_per_chunk=float(_get(thinker, "seconds_per_chunk", 2)),
            ),
            second_per_grid_convention="qwen2_5_omni",
        )  # fmt: skip
    if model_type == "qwen2_5_vl":
        vision = hf_config.vision_config
        merge = int(_get(vision, "spatial_merge_size", 2))
        return MultimodalFamily(
            model_type=model_type,
            image_token_id=int(hf_config.image_token_id),
            video_token_id=int(hf_config.video_token_id),
            audio_token_id=None,
            vision_start_token_id=int(hf_config.vision_start_token_id),
            vision_end_token_id=_token_id(hf_config, "vision_end_token_id", tokenizer, "<|vision_end|>"),
            audio_start_token_id=None,
            audio_end_token_id=None,
            spatial_merge_size=merge,
            mrope=MRopeConfig(
                spatial_merge_size=merge,
                position_id_per_seconds=float(_get(vision, "tokens_per_second", 2)),
            ),
            second_per_grid_convention="qwen2_5_vl",
        )  # fmt: skip
    raise ValueError(
        f"model_type {model_type!r} takes no media here; multimodal checkpoints supported: "
        f"{', '.join(SUPPORTED_MODEL_TYPES)}"
    )
