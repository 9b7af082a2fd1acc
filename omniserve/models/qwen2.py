"""Qwen2 / Qwen2.5 decoder (Qwen2ForCausalLM) for the paged engine.

In: flattened `input_ids` [T] and `positions` [T] of every request in the step (attention metadata comes
from the forward context). Out: hidden states [T, H]; `compute_logits` maps selected rows to [N, V].
Matches transformers' Qwen2ForCausalLM: GQA, q/k/v with bias, o_proj without, RMSNorm, SwiGLU MLP,
tied or untied embeddings. q|k|v and gate|up are stored fused; `load_weights` maps HF names onto them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from omniserve.attention.layer import Attention
from omniserve.models.layers import GateUpLinear, Linear, RMSNorm, RotaryEmbedding, StackedLinear
from omniserve.models.rope import rope_from_config

# HF checkpoint projection -> (fused module, shard name)
_STACKED = {
    "q_proj": ("qkv_proj", "q"),
    "k_proj": ("qkv_proj", "k"),
    "v_proj": ("qkv_proj", "v"),
    "gate_proj": ("gate_up_proj", "gate"),
    "up_proj": ("gate_up_proj", "up"),
}


class Qwen2Attention(nn.Module):
    def __init__(self, config, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.qkv_proj = StackedLinear(
            config.hidden_size, {"q": q_size, "k": kv_size, "v": kv_size}, bias=True
        )
        self.o_proj = Linear(q_size, config.hidden_size, bias=False)
        self.rotary = rotary
        self.attn = Attention(self.num_heads, self.num_kv_heads, self.head_dim, self.head_dim**-0.5)
        self.split_sizes = [q_size, kv_size, kv_size]

    def forward(self, positions: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        num_tokens = hidden.shape[0]
        q, k, v = self.qkv_proj(hidden).split(self.split_sizes, dim=-1)
        q = q.reshape(num_tokens, self.num_heads, self.head_dim)  # [T, Hq, D]
        k = k.reshape(num_tokens, self.num_kv_heads, self.head_dim)  # [T, Hkv, D]
        v = v.reshape(num_tokens, self.num_kv_heads, self.head_dim)
        out = self.attn(q, k, v, self.rotary, positions)  # rotates q and k as it writes K/V; [T, Hq, D]
        return self.o_proj(out.reshape(num_tokens, -1))


class Qwen2MLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_up_proj = GateUpLinear(hidden_size, intermediate_size)  # x -> silu(gate) * up
        self.down_proj = Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.gate_up_proj(x))


class Qwen2DecoderLayer(nn.Module):
    def __init__(self, config, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.self_attn = Qwen2Attention(config, rotary)
        self.mlp = Qwen2MLP(config.hidden_size, config.intermediate_size)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self, positions: torch.Tensor, hidden: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual = hidden
            hidden = self.input_layernorm(hidden)
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(positions, hidden)
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(hidden), residual


class Qwen2Model(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        inv_freq, scaling, mrope_section = rope_from_config(config, head_dim)
        rotary = RotaryEmbedding(inv_freq, config.max_position_embeddings, scaling, mrope_section)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            Qwen2DecoderLayer(config, rotary) for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, inputs_embeds: torch.Tensor | None = None
    ) -> torch.Tensor:
        hidden = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # [T, H]
        residual = None
        for layer in self.layers:
            hidden, residual = layer(positions, hidden, residual)
        hidden, _ = self.norm(hidden, residual)
        return hidden


class Qwen2ForCausalLM(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        if getattr(config, "use_sliding_window", False):
            raise ValueError("Qwen2 checkpoints with use_sliding_window=True are not supported yet")
        self.config = config
        self.model = Qwen2Model(config)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, positions)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [N, H] -> logits [N, V] in the model's dtype (the sampler upcasts when it needs to)."""
        return self.lm_head(hidden)

    def attention_layers(self) -> list[Attention]:
        return [layer.self_attn.attn for layer in self.model.layers]

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        load_decoder_weights(self, weights, self.config.tie_word_embeddings)


def load_decoder_weights(
    root: nn.Module, weights: Iterable[tuple[str, torch.Tensor]], tie_word_embeddings: bool
) -> None:
    """Copy HF-named decoder tensors (`model.*`, `lm_head.weight`, relative to `root`) into `root.model` and
    `root.lm_head`, mapping q/k/v and gate/up onto the fused projections; raise if a decoder parameter
    stays unloaded, or a tensor matches nothing."""
    params = dict(root.named_parameters())
    loaded: set[str] = set()
    for name, tensor in weights:
        if "rotary_emb.inv_freq" in name:
            continue
        if name == "lm_head.weight" and tie_word_embeddings:
            continue
        parts = name.rsplit(".", 2)  # [..., "q_proj", "weight"]
        if len(parts) == 3 and parts[1] in _STACKED:
            fused, shard = _STACKED[parts[1]]
            module_name = f"{parts[0]}.{fused}"
            root.get_submodule(module_name).load_shard(shard, parts[2], tensor)
            loaded.add(f"{module_name}.{parts[2]}#{shard}")
            continue
        if name not in params:
            raise ValueError(f"checkpoint tensor {name!r} matches no parameter of {type(root).__name__}")
        param = params[name]
        if param.shape != tensor.shape:
            raise ValueError(
                f"checkpoint tensor {name!r} has shape {tuple(tensor.shape)}, expected {tuple(param.shape)}"
            )
        with torch.no_grad():
            param.copy_(tensor)
        loaded.add(name)
    missing = []
    for prefix in ("model", "lm_head"):
        for name, module in root.get_submodule(prefix).named_modules(prefix=prefix):
            for param_name, _ in module.named_parameters(recurse=False):
                full = f"{name}.{param_name}"
                if isinstance(module, StackedLinear):
                    missing += [f"{full}#{s}" for s in module.shard_offsets if f"{full}#{s}" not in loaded]
                elif full not in loaded and not (full == "lm_head.weight" and tie_word_embeddings):
                    missing.append(full)
    if missing:
        raise ValueError(f"checkpoint is missing {len(missing)} tensors, e.g. {missing[:5]}")
