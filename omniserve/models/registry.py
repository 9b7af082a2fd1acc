"""Architecture name (config.json `architectures[0]`) -> model class, imported lazily."""

from __future__ import annotations

import importlib

from torch import nn

_MODELS: dict[str, tuple[str, str]] = {
    "Qwen2ForCausalLM": ("omniserve.models.qwen2", "Qwen2ForCausalLM"),
    "Qwen2_5OmniForConditionalGeneration": ("omniserve.models.qwen_multimodal", "QwenMultimodalForCausalLM"),
    "Qwen2_5_VLForConditionalGeneration": ("omniserve.models.qwen_multimodal", "QwenMultimodalForCausalLM"),
}


def supported_architectures() -> list[str]:
    return sorted(_MODELS)


def resolve_model_class(config) -> type[nn.Module]:
    architectures = list(getattr(config, "architectures", None) or [])
    for arch in architectures:
        if arch in _MODELS:
            module, name = _MODELS[arch]
            return getattr(importlib.import_module(module), name)
    raise ValueError(
        f"unsupported model architecture {architectures or '(none in config.json)'}; "
        f"supported: {', '.join(supported_architectures())}"
    )
