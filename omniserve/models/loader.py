"""Checkpoint loading: resolve a model reference to a local folder, build the model, fill its weights.

`model` is a local folder or a Hugging Face id (downloaded through huggingface_hub's cache; offline
machines need the folder). Weights are the checkpoint's safetensors (one file or shards, any of
fp32/fp16/bf16, cast to the engine dtype), or random (`load_format="dummy"`, seeded) for benchmarks.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from omniserve.models.registry import resolve_model_class

_HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja", "spk_dict.pt"]


def resolve_model_path(model: str, revision: str | None = None) -> Path:
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"model folder {str(path)!r} has no config.json")
        return path
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise ValueError(
            f"model {model!r} is not a folder with a checkpoint, nor a Hugging Face id (org/name)"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, revision=revision, allow_patterns=_HUB_FILES))
    except Exception as error:  # offline, unknown repo, gated repo: say which
        raise ValueError(
            f"model {model!r} is not a local folder and could not be fetched from the "
            f"Hugging Face hub: {type(error).__name__}: {error}"
        ) from error


def load_hf_config(path: Path):
    """The checkpoint's transformers config. transformers' own validation warnings (e.g. Qwen2.5-Omni's talker
    checking thinker token ids against the codec vocabulary, as it does for the released checkpoints) are
    silenced: they concern parts of its model class that we do not use."""
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoConfig.from_pretrained(path)
    except Exception as error:
        raise ValueError(f"cannot read the model config in {str(path)!r}: {error}") from error
    finally:
        hf_logging.set_verbosity(verbosity)


def iterate_safetensors(
    path: Path, prefixes: tuple[str, ...] | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of the checkpoint, or only those whose name starts with one of `prefixes`."""
    from safetensors import safe_open

    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise ValueError(f"no *.safetensors files in {str(path)!r}")
    for file in files:
        with safe_open(file, framework="pt") as reader:
            for name in reader.keys():
                if prefixes is None or name.startswith(prefixes):
                    yield name, reader.get_tensor(name)


def resolve_dtype(dtype: str, hf_config, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cpu":
        return torch.float32
    checkpoint = getattr(hf_config, "dtype", None) or getattr(hf_config, "torch_dtype", None)
    if isinstance(checkpoint, str):
        checkpoint = getattr(torch, checkpoint, None)
    return checkpoint if checkpoint in (torch.float16, torch.bfloat16) else torch.bfloat16


def load_model(
    path: Path, hf_config, dtype: torch.dtype, device: torch.device, load_format: str, seed: int
) -> nn.Module:
    model_class = resolve_model_class(hf_config)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = model_class(hf_config)
    finally:
        torch.set_default_dtype(default_dtype)
    if load_format == "dummy":
        generator = torch.Generator(device=device).manual_seed(seed)
        with torch.no_grad():
            for param in model.parameters():
                param.uniform_(-0.02, 0.02, generator=generator)
    else:
        model.load_weights(iterate_safetensors(path))
    # Buffers (rotary tables) stay fp32.
    return model.eval()
