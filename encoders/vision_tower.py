"""The Qwen2.5-VL / Qwen2.5-Omni vision tower: patches in, one embedding per 2x2 merge group out.

In: `pixel_values` [num_patches, C*T*P*P] (1176 = 3 channels x 2 frames x 14 x 14, as the processor emits
them, items packed back to back) and `grid_thw` [num_items, 3]. Out: [num_patches / m**2, out_hidden_size]
in processor order (item, frame, merged row, merged column), ready to replace the placeholder tokens.

Pipeline (shapes for N patches, E = hidden_size):
    patch_embed   linear over the flattened patch (the checkpoint's Conv3d, whose stride equals its kernel)
    permute       into window order (`vision_layout.py`), by merge group of m*m patches      [N, E]
    depth x block RMSNorm -> attention with 2-D rotary on (row, column), inside windows or, for the
                  `fullatt_block_indexes` layers, inside frames -> RMSNorm -> SwiGLU MLP (with biases)
    merger        RMSNorm, view each group as one row [N/m^2, m^2*E], Linear -> GELU -> Linear
    permute back  to processor order                                                   [N/m^2, out_hidden]
Qwen2.5-VL checkpoints store the attention input projection fused (`attn.qkv`); the Omni vision encoder
stores `attn.q`, `attn.k`, `attn.v`. Both load into the same fused layer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from omniserve.encoders.varlen_attention import VarlenPlan, varlen_attention
from omniserve.encoders.vision_layout import VisionLayout, build_vision_layout
from omniserve.encoders.weight_loading import CheckpointCopier
from torch import nn

from omniserve.models.layers import RMSNorm, SiluAndMul, StackedLinear

# weight-name prefixes of the tower in checkpoints as transformers saves them (in memory the modules sit at
# `thinker.model.visual` and `model.visual`; saving maps them back to these)
OMNI_VISION_PREFIX = "thinker.visual."
QWEN2_5_VL_VISION_PREFIX = "visual."
RMS_NORM_EPS = 1e-6  # fixed in transformers' vision blocks and merger, not a config field

# checkpoint module name -> (our fused module, shard)
_SHARDED = {"attn.q": ("attn.qkv", "q"), "attn.k": ("attn.qkv", "k"), "attn.v": ("attn.qkv", "v"),
            "mlp.gate_proj": ("mlp.gate_up_proj", "gate"), "mlp.up_proj": ("mlp.gate_up_proj", "up")}
_MLP_SHARD_TO_CHECKPOINT = {"gate": "gate_proj", "up": "up_proj"}


@dataclass(frozen=True)
class VisionTowerConfig:
    """What the tower needs from transformers' `Qwen2_5_VLVisionConfig` / `Qwen2_5OmniVisionEncoderConfig`."""

    depth: int  # number of transformer blocks
    hidden_size: int  # E, width of the blocks
    num_heads: int  # attention heads; head_dim = E / num_heads (divisible by 4 for the 2-D rotary)
    intermediate_size: int  # SwiGLU width of the block MLP
    in_channels: int  # 3 (RGB)
    patch_size: int  # 14 px a side
    temporal_patch_size: int  # 2 frames per patch (images are repeated to 2 frames by the processor)
    spatial_merge_size: int  # m = 2: m x m patches become one output token
    window_size: int  # 112 px: side of the attention windows
    fullatt_block_indexes: tuple[int, ...]  # blocks that attend over the whole frame
    out_hidden_size: int  # width of the output tokens (the text model's hidden size)
    rope_theta: float  # base of the 2-D rotary frequencies (10000)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size**2


def vision_config_from_hf(config) -> VisionTowerConfig:
    """Accepts the vision config itself or a parent (Qwen2.5-VL config, Omni config or thinker config)."""
    config = getattr(config, "thinker_config", config)
    config = getattr(config, "vision_config", config)
    if config.hidden_act != "silu":
        raise ValueError(f"vision hidden_act {config.hidden_act!r} is not supported (only 'silu')")
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "axial") != "axial":
        raise ValueError(f"vision rope_type {rope['rope_type']!r} is not supported (only 'axial')")
    tower = VisionTowerConfig(
        depth=config.depth, hidden_size=config.hidden_size, num_heads=config.num_heads,
        intermediate_size=config.intermediate_size, in_channels=config.in_channels,
        patch_size=config.patch_size, temporal_patch_size=config.temporal_patch_size,
        spatial_merge_size=config.spatial_merge_size, window_size=config.window_size,
        fullatt_block_indexes=tuple(config.fullatt_block_indexes), out_hidden_size=config.out_hidden_size,
        rope_theta=float(rope.get("rope_theta", 10000.0)),
    )
    if tower.hidden_size % tower.num_heads or tower.head_dim % 4:
        raise ValueError(f"vision head_dim {tower.hidden_size}/{tower.num_heads} must be an integer "
                         "divisible by 4")
    return tower


def rotate_2d(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [N, H, D]; cos, sin: [N, 1, D] fp32 (angles duplicated over both halves). Rotate-half rotary,
    computed in fp32 as transformers does."""
    half = x.shape[-1] // 2
    x32 = x.float()
    rotated = torch.cat([-x32[..., half:], x32[..., :half]], dim=-1)
    return (x32 * cos + rotated * sin).to(x.dtype)


class VisionAttention(nn.Module):
    def __init__(self, config: VisionTowerConfig) -> None:
        super().__init__()
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        width = config.hidden_size
        self.qkv = StackedLinear(width, {"q": width, "k": width, "v": width}, bias=True)
        self.proj = nn.Linear(width, width, bias=True)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, plan: VarlenPlan
    ) -> torch.Tensor:
        """x: [N, E] in window order -> [N, E]."""
        num_patches = x.shape[0]
        q, k, v = self.qkv(x).view(num_patches, 3, self.num_heads, self.head_dim).unbind(1)  # each [N, H, D]
        out = varlen_attention(rotate_2d(q, cos, sin), rotate_2d(k, cos, sin), v, plan)  # [N, H, D]
        return self.proj(out.reshape(num_patches, -1))


class VisionMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_up_proj = StackedLinear(hidden_size, {"gate": intermediate_size, "up": intermediate_size},
                                          bias=True)
        self.act = SiluAndMul()
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_up_proj(x)))


class VisionBlock(nn.Module):
    def __init__(self, config: VisionTowerConfig) -> None:
        super().__init__()
        self.norm1 = RMSNorm(config.hidden_size, RMS_NORM_EPS)
        self.attn = VisionAttention(config)
        self.norm2 = RMSNorm(config.hidden_size, RMS_NORM_EPS)
        self.mlp = VisionMLP(config.hidden_size, config.intermediate_size)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, plan: VarlenPlan
    ) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, plan)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    """m*m adjacent patches (one unit) -> one output token."""

    def __init__(self, config: VisionTowerConfig) -> None:
        super().__init__()
        self.unit_width = config.hidden_size * config.spatial_merge_size**2
        self.ln_q = RMSNorm(config.hidden_size, RMS_NORM_EPS)
        # names match the checkpoint: mlp.0 and mlp.2
        self.mlp = nn.Sequential(nn.Linear(self.unit_width, self.unit_width), nn.GELU(),
                                 nn.Linear(self.unit_width, config.out_hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, E] -> [N / m^2, out_hidden]."""
        return self.mlp(self.ln_q(x).view(-1, self.unit_width))


class PatchEmbed(nn.Module):
    """The checkpoint's Conv3d (kernel == stride == one patch) as a linear over the flattened patch."""

    def __init__(self, config: VisionTowerConfig) -> None:
        super().__init__()
        # loads the checkpoint's conv weight [E, C, T, P, P] reshaped to [E, C*T*P*P]
        self.proj = nn.Linear(config.patch_dim, config.hidden_size, bias=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.proj(pixel_values.to(self.proj.weight.dtype))


class VisionTower(nn.Module):
    def __init__(self, config: VisionTowerConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        self.blocks = nn.ModuleList(VisionBlock(config) for _ in range(config.depth))
        self.merger = PatchMerger(config)
        quarter = config.head_dim // 4  # D/4 frequencies for rows, D/4 for columns
        exponents = torch.arange(quarter, dtype=torch.float32) * 4 / config.head_dim  # 2j / (D/2)
        inv_freq = 1.0 / config.rope_theta**exponents
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # [D/4] fp32

    @classmethod
    def from_hf_config(cls, config) -> VisionTower:
        return cls(vision_config_from_hf(config))

    def build_layout(self, grid_thw: torch.Tensor | list[list[int]]) -> VisionLayout:
        """Host-side index arithmetic for one batch; `forward` builds it when not given one."""
        c = self.config
        return build_vision_layout(grid_thw, c.spatial_merge_size, c.window_size, c.patch_size,
                                   self.inv_freq.device)

    def forward(
        self, pixel_values: torch.Tensor, grid_thw: torch.Tensor | list[list[int]] | None = None,
        layout: VisionLayout | None = None,
    ) -> torch.Tensor:
        """pixel_values: [N, patch_dim], grid_thw: [num_items, 3] -> [N / m^2, out_hidden] (processor order).
        Split per item with `layout.tokens_per_item`."""
        if layout is None:
            if grid_thw is None:
                raise ValueError("VisionTower needs grid_thw or a layout")
            layout = self.build_layout(grid_thw)
        num_patches = pixel_values.shape[0]
        if pixel_values.dim() != 2 or pixel_values.shape[1] != self.config.patch_dim:
            raise ValueError(f"pixel_values must be [num_patches, {self.config.patch_dim}], "
                             f"got {tuple(pixel_values.shape)}")
        if num_patches != layout.positions.shape[0]:
            raise ValueError(f"grid_thw describes {layout.positions.shape[0]} patches, "
                             f"pixel_values has {num_patches}")
        unit = self.config.spatial_merge_size**2
        hidden = self.patch_embed(pixel_values)  # [N, E] processor order
        hidden = hidden.view(-1, unit, hidden.shape[-1])[layout.window_index]  # [N/m^2, m^2, E] window order
        hidden = hidden.view(num_patches, -1)
        angles = (layout.positions[:, :, None].float() * self.inv_freq).flatten(1)  # [N, D/2]: rows | columns
        angles = torch.cat([angles, angles], dim=-1)[:, None, :]  # [N, 1, D]
        cos, sin = angles.cos(), angles.sin()
        full_attention = set(self.config.fullatt_block_indexes)
        for index, block in enumerate(self.blocks):
            plan = layout.frame_plan if index in full_attention else layout.window_plan
            hidden = block(hidden, cos, sin, plan)
        return self.merger(hidden)[layout.reverse_index]  # [N / m^2, out_hidden] processor order

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]], prefix: str) -> None:
        """Fills every parameter from HF-named tensors under `prefix` (`thinker.visual.` for Qwen2.5-Omni,
        `visual.` for Qwen2.5-VL as saved by transformers); other names are skipped. Raises ValueError
        naming unknown, misshaped and missing tensors."""
        copier = CheckpointCopier(self, prefix, _checkpoint_name)
        for name, tensor in weights:
            if not name.startswith(prefix):
                continue
            local = name[len(prefix):]
            module_path, _, param_kind = local.rpartition(".")  # "blocks.3.attn.q", "weight"
            block_prefix, module_suffix = _split_block(module_path)
            if module_suffix in _SHARDED:
                fused, shard = _SHARDED[module_suffix]
                copier.copy(name, f"{block_prefix}{fused}.{param_kind}", tensor, shard=shard)
            else:
                copier.copy(name, local, tensor, reshape_to_param=local == "patch_embed.proj.weight")
        copier.finish()


def _split_block(module_path: str) -> tuple[str, str]:
    """"blocks.3.attn.q" -> ("blocks.3.", "attn.q"); paths outside the blocks -> ("", path)."""
    parts = module_path.split(".", 2)
    if len(parts) == 3 and parts[0] == "blocks":
        return f"blocks.{parts[1]}.", parts[2]
    return "", module_path


def _checkpoint_name(param: str, shard: str | None) -> str:
    """Our parameter (or one shard of a fused one) -> the checkpoint name, for error messages."""
    module_path, _, param_kind = param.rpartition(".")
    parent, _, fused = module_path.rpartition(".")
    if fused == "qkv":
        return param if shard is None else f"{parent}.{shard}.{param_kind}"
    if fused == "gate_up_proj":
        shards = ["gate", "up"] if shard is None else [shard]
        return " and ".join(f"{parent}.{_MLP_SHARD_TO_CHECKPOINT[s]}.{param_kind}" for s in shards)
    return param
