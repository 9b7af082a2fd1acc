"""The Qwen2.5-Omni audio encoder (`thinker.audio_tower.*`): log-mel frames in, ~25 embeddings per second out.

In: mel features [num_mel_bins, sum(L_i)] of several items packed along time (transformers' layout) with
their frame counts L_i, or a list of [num_mel_bins, L_i]. Out: [sum(tokens_i), output_dim] (or a list),
tokens_i = `num_audio_tokens(L_i)` = ((L_i - 1) // 2 + 1 - 2) // 2 + 1.

Each item is cut into chunks of C = 2 * n_window frames (200 = 2 s; the last chunk holds the remainder) and
every chunk goes through the stem and the transformer on its own (positions restart per chunk):

    item frames:   |----- C -----|----- C -----|-- r --|
    conv1 (k3, s1) + GELU, conv2 (k3, s2) + GELU, zero padding at each chunk edge -> (len - 1) // 2 + 1 rows
    + sinusoidal position embedding [0, len') per chunk
    encoder layers (pre-LN, GELU MLP), attention inside each chunk            [T, d_model], T = sum(len')
    avg pool by 2 over each item's rows (pairs 0-1, 2-3, ...; an odd last row is dropped; pairs never
    straddle items, and never straddle chunks because C is even), ln_post, proj   [tokens, output_dim]

The stem runs on chunks padded to the longest chunk (at most C frames, so padding is bounded by one chunk
per item); the transformer runs on the packed valid rows only. The checkpoint's `audio_bos_eos_token`
table is not used by the encoder (nor by transformers), and `scale_embedding` is ignored as transformers
does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omniserve.encoders.varlen_attention import VarlenPlan, plan_varlen, varlen_attention
from omniserve.encoders.weight_loading import CheckpointCopier
from torch import nn

# weight-name prefix of the tower as saved (in memory the module sits at thinker.model.audio_tower)
OMNI_AUDIO_PREFIX = "thinker.audio_tower."
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm default, as in transformers
_UNUSED = ("audio_bos_eos_token.weight",)  # in the checkpoint, read by nothing


def num_audio_tokens(num_frames: int) -> int:
    """Embeddings the encoder emits for `num_frames` mel frames (0 for fewer than 3 frames)."""
    return ((num_frames - 1) // 2 + 1 - 2) // 2 + 1


@dataclass(frozen=True)
class AudioTowerConfig:
    """What the tower needs from transformers' `Qwen2_5OmniAudioEncoderConfig`."""

    num_mel_bins: int  # 128 input channels
    d_model: int  # width of the encoder layers
    encoder_layers: int  # number of transformer layers
    encoder_attention_heads: int  # heads; head_dim = d_model / heads
    encoder_ffn_dim: int  # MLP width
    max_source_positions: int  # rows of the sinusoidal table (1500); must cover n_window
    n_window: int  # half a chunk: chunks are 2 * n_window mel frames
    output_dim: int  # width of the output embeddings (the text model's hidden size)


def audio_config_from_hf(config) -> AudioTowerConfig:
    """Accepts the audio config itself or a parent (Omni config or thinker config)."""
    config = getattr(config, "thinker_config", config)
    config = getattr(config, "audio_config", config)
    if config.activation_function != "gelu":
        raise ValueError(f"audio activation_function {config.activation_function!r} is not supported "
                         "(only 'gelu')")
    tower = AudioTowerConfig(
        num_mel_bins=config.num_mel_bins, d_model=config.d_model, encoder_layers=config.encoder_layers,
        encoder_attention_heads=config.encoder_attention_heads, encoder_ffn_dim=config.encoder_ffn_dim,
        max_source_positions=config.max_source_positions, n_window=config.n_window,
        output_dim=config.output_dim,
    )
    if tower.d_model % tower.encoder_attention_heads or tower.d_model % 2:
        raise ValueError(f"audio d_model {tower.d_model} must be even and divisible by the head count")
    if tower.max_source_positions < (2 * tower.n_window - 1) // 2 + 1:
        raise ValueError(f"max_source_positions {tower.max_source_positions} is shorter than one chunk")
    return tower


def sinusoid_table(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """[length, channels] fp32: sin of position * inv_timescale in the first half, cos in the second."""
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-increment * torch.arange(channels // 2, dtype=torch.float32))  # [C/2]
    scaled = torch.arange(length, dtype=torch.float32)[:, None] * inv_timescales[None, :]  # [length, C/2]
    return torch.cat([scaled.sin(), scaled.cos()], dim=1)


@dataclass(frozen=True)
class AudioLayout:
    """How a packed audio batch is cut into chunks and pooled (host-side, from the frame counts)."""

    # mel frames in each chunk, items in order, chunks in order (host list: split sizes)
    chunk_frames: list[int]
    # [num_chunks, max chunk frames] bool: which columns of the padded chunk batch hold real frames
    frame_mask: torch.Tensor
    # [T] int64: row of each valid stem output in the padded [num_chunks * max_rows] stem output
    valid_rows: torch.Tensor
    # attention sequences: one per chunk, in stem rows
    plan: VarlenPlan
    # [num_tokens] int64: first row (of the packed T rows) of each pooled pair
    pool_rows: torch.Tensor
    # output embeddings of each item
    tokens_per_item: list[int]


def build_audio_layout(
    frames_per_item: Sequence[int], n_window: int, device: torch.device | str
) -> AudioLayout:
    if not frames_per_item:
        raise ValueError("no audio items")
    chunk = 2 * n_window
    chunk_frames: list[int] = []
    pool_rows: list[torch.Tensor] = []
    tokens_per_item, row_offset = [], 0
    for frames in frames_per_item:
        if frames < 1:
            raise ValueError(f"audio items need at least one mel frame, got {frames}")
        chunk_frames += [chunk] * (frames // chunk) + ([frames % chunk] if frames % chunk else [])
        tokens = num_audio_tokens(frames)
        pool_rows.append(row_offset + 2 * torch.arange(tokens))
        tokens_per_item.append(tokens)
        row_offset += (frames - 1) // 2 + 1  # stem rows of the item: the sum over its chunks, C being even
    chunk_tensor = torch.tensor(chunk_frames, dtype=torch.int64)
    chunk_rows = (chunk_tensor - 1) // 2 + 1  # [num_chunks] stem output rows per chunk
    max_rows = int(chunk_rows.max())
    valid = torch.arange(max_rows)[None, :] < chunk_rows[:, None]  # [num_chunks, max_rows]
    return AudioLayout(
        chunk_frames=chunk_frames,
        frame_mask=(torch.arange(int(chunk_tensor.max()))[None, :] < chunk_tensor[:, None]).to(device),
        valid_rows=valid.flatten().nonzero().squeeze(-1).to(device),
        plan=plan_varlen([0] + chunk_rows.cumsum(0).tolist(), device),
        pool_rows=torch.cat(pool_rows).to(device),
        tokens_per_item=tokens_per_item,
    )


class AudioAttention(nn.Module):
    def __init__(self, config: AudioTowerConfig) -> None:
        super().__init__()
        width = config.d_model
        self.num_heads = config.encoder_attention_heads
        self.q_proj = nn.Linear(width, width, bias=True)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=True)
        self.out_proj = nn.Linear(width, width, bias=True)

    def forward(self, x: torch.Tensor, plan: VarlenPlan) -> torch.Tensor:
        """x: [T, d_model] -> [T, d_model]."""
        shape = (x.shape[0], self.num_heads, -1)
        q, k, v = (proj(x).view(shape) for proj in (self.q_proj, self.k_proj, self.v_proj))  # [T, H, D]
        return self.out_proj(varlen_attention(q, k, v, plan).flatten(1))


class AudioEncoderLayer(nn.Module):
    def __init__(self, config: AudioTowerConfig) -> None:
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model, eps=LAYER_NORM_EPS)
        self.self_attn = AudioAttention(config)
        self.final_layer_norm = nn.LayerNorm(config.d_model, eps=LAYER_NORM_EPS)
        self.fc1 = nn.Linear(config.d_model, config.encoder_ffn_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_dim, config.d_model)

    def forward(self, x: torch.Tensor, plan: VarlenPlan) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), plan)
        x = x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))
        if x.dtype == torch.float16:  # as transformers: keep fp16 activations finite
            limit = torch.finfo(torch.float16).max - 1000
            x = x.clamp(-limit, limit)
        return x


class AudioTower(nn.Module):
    def __init__(self, config: AudioTowerConfig) -> None:
        super().__init__()
        self.config = config
        self.conv1 = nn.Conv1d(config.num_mel_bins, config.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(config.d_model, config.d_model, kernel_size=3, stride=2, padding=1)
        self.layers = nn.ModuleList(AudioEncoderLayer(config) for _ in range(config.encoder_layers))
        self.ln_post = nn.LayerNorm(config.d_model, eps=LAYER_NORM_EPS)
        self.proj = nn.Linear(config.d_model, config.output_dim)
        table = sinusoid_table(config.max_source_positions, config.d_model)
        self.register_buffer("positional_embedding", table, persistent=False)  # [positions, d_model] fp32

    @classmethod
    def from_hf_config(cls, config) -> AudioTower:
        return cls(audio_config_from_hf(config))

    def build_layout(self, frames_per_item: Sequence[int]) -> AudioLayout:
        return build_audio_layout(frames_per_item, self.config.n_window, self.positional_embedding.device)

    def forward(
        self, features: torch.Tensor, frames_per_item: Sequence[int] | torch.Tensor | None = None,
        layout: AudioLayout | None = None,
    ) -> torch.Tensor:
        """features: [num_mel_bins, sum(L_i)], frames_per_item: L_i -> [sum(tokens_i), output_dim].
        Split per item with `layout.tokens_per_item`."""
        if layout is None:
            if frames_per_item is None:
                raise ValueError("AudioTower needs frames_per_item or a layout")
            layout = self.build_layout([int(n) for n in frames_per_item])
        if features.dim() != 2 or features.shape[0] != self.config.num_mel_bins:
            raise ValueError(f"features must be [{self.config.num_mel_bins}, frames], "
                             f"got {tuple(features.shape)}")
        total_frames = sum(layout.chunk_frames)
        if features.shape[1] != total_frames:
            raise ValueError(f"features have {features.shape[1]} frames, the items {total_frames}")
        dtype = self.conv1.weight.dtype
        chunks = features.to(dtype).T.split(layout.chunk_frames)  # each [len, mel]
        padded = nn.utils.rnn.pad_sequence(list(chunks), batch_first=True).transpose(1, 2)  # [chunks, mel, C]
        stem = F.gelu(self.conv1(padded)) * layout.frame_mask[:, None, :]  # zeros past each chunk's end
        stem = F.gelu(self.conv2(stem)).transpose(1, 2)  # [chunks, rows, d_model]
        stem = stem + self.positional_embedding[: stem.shape[1]].to(dtype)
        hidden = stem.reshape(-1, stem.shape[-1])[layout.valid_rows]  # [T, d_model] packed chunk rows
        for layer in self.layers:
            hidden = layer(hidden, layout.plan)
        pooled = (hidden[layout.pool_rows] + hidden[layout.pool_rows + 1]) / 2  # [tokens, d_model]
        return self.proj(self.ln_post(pooled))

    def encode(self, items: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """items: [num_mel_bins, L_i] each -> [tokens_i, output_dim] each, run as one packed batch."""
        layout = self.build_layout([item.shape[1] for item in items])
        return list(self.forward(torch.cat(list(items), dim=1), layout=layout).split(layout.tokens_per_item))

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]], prefix: str) -> None:
        """Fills every parameter from HF-named tensors under `prefix` (`thinker.audio_tower.`); other names
        are skipped. Raises ValueError naming unknown, misshaped and missing tensors."""
        copier = CheckpointCopier(self, prefix)
        for name, tensor in weights:
            if name.startswith(prefix) and name[len(prefix):] not in _UNUSED:
                copier.copy(name, name[len(prefix):], tensor)
        copier.finish()
