"""Prompt with media -> `ProcessedPrompt` with expanded placeholders, `MediaItem`s and M-RoPE positions.

For Qwen2.5-Omni and Qwen2.5-VL checkpoints; equal to the checkpoint's HF processor (same ids, same
pixel_values / grid_thw / input_features) and to the HF model's `get_rope_index`.

    prompt dict ──> text (rendered chat template for messages) ──tokenize──> ids, one placeholder per item
                    media (multi_modal_data / content parts)   ──MediaPlanner──> PlannedMedia per item
                                                  (nothing decoded but audio; sources go to the MediaStore)
    ids ──expand──> each placeholder becomes num_tokens copies (audio in video: <|audio_bos|> runs
                    <|audio_eos|>) ──> MediaItem(offset, num_tokens, content_hash, MediaPlan, ...)
                                   ──> mrope_positions(...) -> positions [3, N], delta

The store files of a prompt are held by `ProcessedPrompt.media_lease` until the caller releases it (its
requests finished); a prompt that fails here releases its own.

Items are matched to placeholders in order, per modality; a count mismatch is an error. Text-only
prompts to a multimodal model go through here too (no media: plain positions), so that a placeholder
typed without its media is refused instead of reaching the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omniserve.frontend.input_processor import ProcessedPrompt
from omniserve.frontend.media_limits import MediaLimits
from omniserve.frontend.media_store import MediaLease, MediaStore
from omniserve.frontend.mm_family import SUPPORTED_MODEL_TYPES, MultimodalFamily, family_from_config
from omniserve.frontend.mm_inputs import (
    MediaInput,
    MediaOptions,
    media_from_data,
    media_from_messages,
    parse_options,
)
from omniserve.models.mrope import MRopeItem, mrope_positions
from omniserve.multimodal import MediaItem

if TYPE_CHECKING:
    from omniserve.frontend.media_planner import PlannedMedia

__all__ = ["MediaLimits", "MultimodalProcessor", "build_multimodal_processor"]


class MultimodalProcessor:
    def __init__(
        self,
        model_path: str | Path,
        hf_config: Any,
        tokenizer: Any,
        limits: MediaLimits | None = None,
        store: MediaStore | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.limits = limits or MediaLimits()
        self.family: MultimodalFamily = family_from_config(hf_config, tokenizer)
        self.store = store or MediaStore()
        from omniserve.frontend.media_planner import MediaPlanner  # decoders (PyAV, torchvision): load lazily

        self.planner = MediaPlanner(model_path, self.family, self.limits, self.store)

    # ---- prompt dict -> (text, ids, media, options) -------------------------------------------------------

    def _render(self, messages: list[dict[str, Any]]) -> str:
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError("this model has no chat template: send a plain prompt instead of messages")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _parse(self, prompt: Any) -> tuple[str | None, list[int], list[MediaInput], MediaOptions]:
        if isinstance(prompt, str):
            prompt = {"prompt": prompt}
        if not isinstance(prompt, dict):
            raise ValueError(f"a prompt is a string or a dict, got {type(prompt).__name__}")
        options = parse_options(prompt.get("mm_processor_kwargs"))
        data = prompt.get("multi_modal_data")
        media = media_from_data(data, self.family.modalities) if data else []
        if "messages" in prompt:
            if media:
                raise ValueError(
                    "send media either as content parts of messages or in multi_modal_data, not both"
                )
            messages, media = media_from_messages(prompt["messages"])
            text: str | None = self._render(messages)
        elif "prompt_token_ids" in prompt:
            ids = prompt["prompt_token_ids"]
            if not isinstance(ids, list) or not all(isinstance(t, int) for t in ids):
                raise ValueError("prompt_token_ids must be a list of integers")
            return prompt.get("prompt"), list(ids), media, options
        elif "prompt" in prompt:
            text = prompt["prompt"]
            if not isinstance(text, str):
                raise ValueError("prompt must be a string")
        else:
            raise ValueError("a prompt dict needs one of 'prompt', 'prompt_token_ids' or 'messages'")
        return text, self.tokenizer.encode(text, add_special_tokens=False), media, options

    # ---- checks -------------------------------------------------------------------------------------------

    def _match(self, ids: list[int], media: list[MediaInput]) -> list[MediaInput]:
        """Media in prompt order: the k-th placeholder of a modality takes that modality's k-th item."""
        if len(media) > self.limits.max_items:
            raise ValueError(
                f"the prompt has {len(media)} media items, over the limit of {self.limits.max_items}"
            )
        placeholder_modality = self.family.placeholder_ids()
        slots = [placeholder_modality[t] for t in ids if t in placeholder_modality]
        for modality in self.family.modalities:
            wanted = sum(1 for slot in slots if slot == modality)
            given = sum(1 for item in media if item.modality == modality)
            if wanted != given:
                token = self.tokenizer.convert_ids_to_tokens(self.family.placeholder_token_id(modality))
                raise ValueError(
                    f"the prompt has {wanted} {modality} placeholder(s) ({token}) but {given} {modality} "
                    f"item(s) were given; put exactly one placeholder per item"
                )
        queues = {
            modality: [item for item in media if item.modality == modality]
            for modality in self.family.modalities
        }
        return [queues[slot].pop(0) for slot in slots]

    # ---- expansion ----------------------------------------------------------------------------------------

    def _expansion(self, loaded: PlannedMedia) -> tuple[list[int], int]:
        """Tokens replacing one placeholder, and the index of the item's first row among them."""
        family = self.family
        if loaded.modality != "video_with_audio":
            return [family.placeholder_token_id(loaded.modality)] * loaded.num_tokens, 0
        # <|audio_bos|> [video run][audio run]... <|audio_eos|>, inside <|vision_bos|> .. <|vision_eos|>
        assert family.audio_start_token_id is not None and family.audio_end_token_id is not None
        run_ids = [family.placeholder_token_id(run.modality) for run in loaded.runs for _ in range(run.count)]
        return [family.audio_start_token_id, *run_ids, family.audio_end_token_id], 1

    def process(self, prompt: Any) -> ProcessedPrompt:
        text, ids, media, options = self._parse(prompt)
        ordered = self._match(ids, media)
        lease = MediaLease()
        try:
            return self._expand(text, ids, ordered, options, lease)
        except BaseException:
            self.store.release(lease)
            raise

    def _expand(
        self,
        text: str | None,
        ids: list[int],
        ordered: list[MediaInput],
        options: MediaOptions,
        lease: MediaLease,
    ) -> ProcessedPrompt:
        placeholder_ids = self.family.placeholder_ids()
        expanded: list[int] = []
        items: list[MediaItem] = []
        rope_items: list[MRopeItem] = []
        pending = iter(ordered)
        for token in ids:
            if token not in placeholder_ids:
                expanded.append(token)
                continue
            source = next(pending)
            loaded = self.planner.plan(source, options, lease)
            if loaded.modality == "video_with_audio" and (
                not expanded or expanded[-1] != self.family.vision_start_token_id
            ):
                raise ValueError(
                    f"{source.name}: with use_audio_in_video the video placeholder must directly "
                    f"follow {self.tokenizer.convert_ids_to_tokens(self.family.vision_start_token_id)}"
                )
            tokens, first_row = self._expansion(loaded)
            offset = len(expanded) + first_row
            expanded.extend(tokens)
            items.append(
                MediaItem(
                    modality=loaded.modality,
                    content_hash=loaded.content_hash,
                    offset=offset,
                    num_tokens=loaded.num_tokens,
                    plan=loaded.plan,
                    grid_thw=loaded.grid_thw,
                    seconds_per_grid=loaded.seconds_per_grid,
                    audio_tokens=loaded.audio_tokens,
                )
            )
            rope_items.append(
                MRopeItem(
                    kind=loaded.modality,
                    offset=offset,
                    length=loaded.num_tokens,
                    grid_thw=loaded.grid_thw,
                    seconds_per_grid=loaded.seconds_per_grid,
                    audio_tokens=loaded.audio_tokens,
                )
            )
        positions, delta = mrope_positions(len(expanded), rope_items, self.family.mrope)
        return ProcessedPrompt(text, expanded, items, positions, delta, lease if lease.keys else None)


def build_multimodal_processor(
    model_path: str | Path,
    tokenizer: Any,
    hf_config: Any = None,
    limits: MediaLimits | None = None,
    store: MediaStore | None = None,
) -> MultimodalProcessor | None:
    """The MultimodalProcessor of a checkpoint folder, or None for a text-only checkpoint (or no folder)."""
    config_file = Path(model_path) / "config.json"
    if hf_config is None:
        if not config_file.is_file():
            return None
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            return None
        from transformers import AutoConfig
        from transformers.utils import logging

        previous = logging.get_verbosity()
        logging.set_verbosity_error()  # Omni: "talker ids outside the codec vocabulary" notes, expected
        try:
            hf_config = AutoConfig.from_pretrained(model_path)
        finally:
            logging.set_verbosity(previous)
    elif getattr(hf_config, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        return None
    return MultimodalProcessor(model_path, hf_config, tokenizer, limits, store)
