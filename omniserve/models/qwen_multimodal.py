"""Qwen2.5-Omni thinker and Qwen2.5-VL for the paged engine: a Qwen2 decoder with M-RoPE whose prompt
embeddings take rows from media encoders.

In: flattened `input_ids` [T], `positions` [3, T] (M-RoPE), and optionally `MediaRows`: rows of the step's
batch whose embedding is an encoder output row instead of a token embedding (a prefill chunk may cover any
part of an item). Out: hidden [T, H]. `encode(EncoderInput)` runs an item's tower(s): [num_tokens, H].

Checkpoint names (transformers 5.x, as saved):
    Qwen2.5-Omni: thinker.model.*, thinker.lm_head.weight, thinker.visual.*, thinker.audio_tower.*
                  (talker.* and token2wav.* belong to speech output and are skipped here)
    Qwen2.5-VL:   model.*, lm_head.weight, visual.*
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from omniserve.encoders.audio_tower import AudioTower, num_audio_tokens
from omniserve.encoders.vision_tower import VisionTower
from omniserve.models.layers import Linear
from omniserve.models.qwen2 import Qwen2Model, load_decoder_weights
from omniserve.multimodal import EncoderInput


@dataclass
class MediaRows:
    """Which rows of the step's embeddings come from encoder outputs."""

    dest: torch.Tensor  # [n] int64, rows of the flattened batch
    embeddings: torch.Tensor  # [n, H] the encoder output rows for them


@dataclass(frozen=True)
class _Family:
    text_prefix: str  # checkpoint prefix of the decoder (mapped to "model.")
    head_name: str  # checkpoint name of the LM head weight
    vision_prefix: str
    audio_prefix: str | None
    skip_prefixes: tuple[str, ...]


_FAMILIES = {
    "qwen2_5_omni": _Family(
        "thinker.model.",
        "thinker.lm_head.weight",
        "thinker.visual.",
        "thinker.audio_tower.",
        ("talker.", "token2wav."),
    ),
    "qwen2_5_vl": _Family("model.", "lm_head.weight", "visual.", None, ()),
}


def text_config_of(config):
    """The decoder's config inside a multimodal config (or the config itself for text models)."""
    if getattr(config, "model_type", None) == "qwen2_5_omni":
        return config.thinker_config.text_config
    return getattr(config, "text_config", None) or config


class QwenMultimodalForCausalLM(nn.Module):
    uses_mrope = True

    def __init__(self, config) -> None:
        super().__init__()
        if config.model_type not in _FAMILIES:
            raise ValueError(f"unsupported multimodal model_type {config.model_type!r}")
        self.family = _FAMILIES[config.model_type]
        self.config = config
        self.text_config = text_config_of(config)
        self.model = Qwen2Model(self.text_config)
        self.lm_head = Linear(self.text_config.hidden_size, self.text_config.vocab_size, bias=False)
        # The flag that governs the LM head sits on the thinker (Omni) or the top-level (VL) config; the
        # nested text config carries a default that transformers ignores for these models.
        owner = config.thinker_config if config.model_type == "qwen2_5_omni" else config
        self.tie_word_embeddings = bool(getattr(owner, "tie_word_embeddings", False))
        if self.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.visual = VisionTower.from_hf_config(config)
        self.audio_tower = AudioTower.from_hf_config(config) if self.family.audio_prefix else None

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, media: MediaRows | None = None
    ) -> torch.Tensor:
        embeddings = self.model.embed_tokens(input_ids)  # [T, H]
        if media is not None:
            embeddings[media.dest] = media.embeddings.to(embeddings.dtype)
        return self.model(input_ids, positions, inputs_embeds=embeddings)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [N, H] -> logits [N, V] in the model's dtype (the sampler upcasts when it needs to)."""
        return self.lm_head(hidden)

    def attention_layers(self):
        return [layer.self_attn.attn for layer in self.model.layers]

    def encode(self, item: EncoderInput) -> torch.Tensor:
        """One item's embedding rows [num_tokens, H], in placeholder order."""
        return encode_item(self.visual, self.audio_tower, item)

    def encode_many(self, items: list[EncoderInput]) -> list[torch.Tensor]:
        """Several items' rows, the towers run once per modality (see `encode_items`)."""
        return encode_items(self.visual, self.audio_tower, items)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        family = self.family
        decoder, vision, audio = [], [], []
        for name, tensor in weights:
            if name.startswith(family.text_prefix):
                decoder.append(("model." + name[len(family.text_prefix) :], tensor))
            elif name == family.head_name:
                decoder.append(("lm_head.weight", tensor))
            elif name.startswith(family.vision_prefix):
                vision.append((name, tensor))
            elif family.audio_prefix and name.startswith(family.audio_prefix):
                audio.append((name, tensor))
            elif not name.startswith(family.skip_prefixes):
                raise ValueError(f"checkpoint tensor {name!r} matches no part of {type(self).__name__}")
        load_decoder_weights(self, decoder, self.tie_word_embeddings)
        self.visual.load_weights(vision, family.vision_prefix)
        if self.audio_tower is not None:
            self.audio_tower.load_weights(audio, family.audio_prefix)


@torch.inference_mode()
def encode_items(
    visual: VisionTower | None, audio_tower: AudioTower | None, items: list[EncoderInput]
) -> list[torch.Tensor]:
    """Run the towers over several items at once: one vision call for every image / video frame stack, one
    audio call for every audio track (attention stays within each item). Returns each item's rows
    [num_tokens, H] in placeholder order (audio in video: the two towers' rows interleaved as `interleave`
    says). Inputs go to the towers' device and dtype."""
    tower = visual if visual is not None else audio_tower
    assert tower is not None, "no encoder tower"
    weight = next(tower.parameters())
    device, dtype = weight.device, weight.dtype
    visual_items = [i for i, item in enumerate(items) if item.pixel_values is not None]
    audio_items = [i for i, item in enumerate(items) if item.features is not None]
    video_rows: dict[int, torch.Tensor] = {}
    audio_rows: dict[int, torch.Tensor] = {}
    if visual_items:
        if visual is None:
            raise ValueError("this encoder has no vision tower")
        grids = [items[i].grid_thw for i in visual_items]
        pixels = torch.cat([items[i].pixel_values for i in visual_items]).to(device, dtype)
        out = visual(pixels, grid_thw=torch.tensor(grids, device=device))  # [sum tokens, H]
        merge = visual.config.spatial_merge_size**2
        sizes = [t * h * w // merge for t, h, w in grids]
        video_rows = dict(zip(visual_items, out.split(sizes), strict=True))
    if audio_items:
        if audio_tower is None:
            raise ValueError("this model has no audio encoder")
        frames = [items[i].features.shape[1] for i in audio_items]
        features = torch.cat([items[i].features for i in audio_items], dim=1).to(
            device, dtype
        )  # [mels, sum L]
        out = audio_tower(features, frames_per_item=frames)
        audio_rows = dict(zip(audio_items, out.split([num_audio_tokens(n) for n in frames]), strict=True))
    results = []
    for index, item in enumerate(items):
        if not item.interleave:
            results.append(video_rows[index] if index in video_rows else audio_rows[index])
            continue
        sources = {"video": video_rows[index], "audio": audio_rows[index]}
        results.append(torch.cat([sources[name][start : start + n] for name, start, n in item.interleave]))
    return results


def encode_item(
    visual: VisionTower | None, audio_tower: AudioTower | None, item: EncoderInput
) -> torch.Tensor:
    """One item's rows [num_tokens, H] (see `encode_items`)."""
    return encode_items(visual, audio_tower, [item])[0]


class MediaTowers(nn.Module):
    """Only the encoder towers of a checkpoint (what an encoder worker builds): `encode` as the full model's.

    `vision` / `audio` choose the towers; the audio tower is skipped for models without one."""

    def __init__(self, config, vision: bool, audio: bool) -> None:
        super().__init__()
        if config.model_type not in _FAMILIES:
            raise ValueError(f"unsupported multimodal model_type {config.model_type!r}")
        self.family = _FAMILIES[config.model_type]
        self.visual = VisionTower.from_hf_config(config) if vision else None
        self.audio_tower = AudioTower.from_hf_config(config) if audio and self.family.audio_prefix else None

    @property
    def weight_prefixes(self) -> tuple[str, ...]:
        """Checkpoint name prefixes of the towers built (to read only those tensors)."""
        prefixes = (self.family.vision_prefix,) if self.visual is not None else ()
        if self.audio_tower is not None:
            prefixes += (self.family.audio_prefix,)
        return prefixes

    def encode(self, item: EncoderInput) -> torch.Tensor:
        return encode_item(self.visual, self.audio_tower, item)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        weights = list(weights)
        if self.visual is not None:
            self.visual.load_weights(weights, self.family.vision_prefix)
        if self.audio_tower is not None:
            self.audio_tower.load_weights(weights, self.family.audio_prefix)
