"""Engine configuration: frozen dataclasses, one per concern, validated in one place.

Every field is documented where it is declared; CLI flags map to fields one to one (`omniserve.cli`
builds its parser from these dataclasses). Values that depend on the checkpoint (context length,
dtype "auto") are resolved by `EngineConfig.resolve`, which returns a new frozen config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

ATTENTION_BACKENDS = ("auto", "torch", "triton")
LOAD_FORMATS = ("auto", "dummy")
DTYPES = ("auto", "float32", "float16", "bfloat16")
ENCODER_MODES = ("auto", "inprocess", "side_stream", "workers")
ASYNC_SCHEDULING = ("auto", "on", "off")


@dataclass(frozen=True)
class ModelConfig:
    model: str | None = None  # HF id or local folder; None = the built-in demo model
    dtype: str = "auto"  # auto = checkpoint dtype on GPU, float32 on CPU
    load_format: str = "auto"  # auto = safetensors from the checkpoint; dummy = random weights
    max_model_len: int | None = None  # context length; None = the checkpoint's max_position_embeddings
    seed: int = 0  # seed for dummy weights and the global sampling RNG
    revision: str | None = None  # HF revision when `model` is a hub id


@dataclass(frozen=True)
class CacheConfig:
    block_size: int = 16  # tokens per KV page
    num_kv_blocks: int | None = None  # pages in the pool; None = derived from the memory budget
    gpu_memory_utilization: float = 0.9  # GPU: fraction of total memory the engine may use
    cpu_kv_cache_bytes: int = 512 * 1024**2  # CPU: byte budget for the pool
    enable_prefix_caching: bool = True  # reuse KV of identical full-block prefixes


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_batched_tokens: int = 2048  # token budget of one step (decode + prefill chunks)
    max_num_seqs: int = 256  # requests running at once
    long_prefill_token_threshold: int = 0  # cap one request's chunk; 0 = up to the whole budget
    # Token budget of a step that also decodes, for serving: keeps running requests' inter-token latency
    # low while prompts prefill. N: a step with D decodes carries at most max(N, 1.5 D) tokens (prefill
    # chunks at least 32); 0 = off (max_num_batched_tokens, best throughput: the offline `Omni` default);
    # -1 = auto: 96 on CUDA (measured on an H200, Omni-7B shapes under media load: p99 inter-token latency
    # 1.41x idle at 96, 1.52x at 128; benchmarks/results/media_*.md), else off
    mixed_step_token_budget: int = -1
    max_num_encoder_tokens: int = 4096  # media embedding rows encoded per step (a bigger item runs alone)
    # "on": step N+1 is scheduled and launched before step N's tokens are read back, so the host work of the
    # engine overlaps the forward on the GPU (outputs come one step later); "off": one step at a time;
    # "auto": on for CUDA devices, off elsewhere (on the CPU there is nothing to overlap).
    async_scheduling: str = "auto"


@dataclass(frozen=True)
class DeviceConfig:
    device: str = "auto"  # auto = cuda if available else cpu; or "cpu", "cuda", "cuda:1"
    attention_backend: str = "auto"  # auto = triton on CUDA, torch elsewhere
    cuda_graphs: bool = True  # capture decode-only steps in CUDA graphs (CUDA + triton backend only)


@dataclass(frozen=True)
class EncoderConfig:
    """Where media are decoded, preprocessed and encoded (never in the frontend: it only plans items).
    "inprocess": in the engine process, before the step's forward (simplest to debug; decoding then runs in
    the engine loop). "side_stream": decoded and preprocessed by `num_preprocess_workers` processes, encoded
    in the engine process on a second CUDA stream, concurrently with the forwards (launched from a
    background thread; the forwards' stream has the higher priority); a chunk waits for its items' events,
    other requests keep stepping. "workers": one process per modality (vision = images, video = videos and
    audio in video, audio), fed jobs by the engine; each decodes, preprocesses and encodes, writes its rows
    straight into embedding pages of the shared pool and reports, while the engine keeps stepping others.
    "auto": side_stream on CUDA (measured on the H200, benchmarks/results/media_*.md: lower decode latency
    under media load than workers, whose processes time-slice the GPU with the engine, and higher
    throughput), in-process elsewhere."""

    encoder_mode: str = "auto"  # "auto" | "inprocess" | "side_stream" | "workers"
    num_vision_workers: int = 1  # processes encoding images (workers mode)
    num_video_workers: int = 1  # processes encoding videos, audio in video included (workers mode)
    num_audio_workers: int = 1  # processes encoding audio (workers mode; none for models without audio)
    encoder_device: str = "auto"  # device of the worker towers; auto = the engine's device
    max_encoder_jobs_in_flight: int = 16  # items submitted to workers and not reported yet (pages held)
    num_preprocess_workers: int = 4  # side_stream on CUDA: processes decoding and preprocessing media


@dataclass(frozen=True)
class EngineConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)

    def __post_init__(self) -> None:
        validate(self)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> EngineConfig:
        """Build from flat keyword arguments (the `Omni(...)` and CLI surface): each name is a field of
        exactly one sub-config."""
        groups: dict[str, dict[str, Any]] = {group: {} for group in _SUBCONFIGS}
        owners = {f.name: group for group, sub in _SUBCONFIGS.items() for f in dataclasses.fields(sub)}
        for name, value in kwargs.items():
            if name not in owners:
                raise TypeError(f"unknown engine option {name!r}; known: {sorted(owners)}")
            groups[owners[name]][name] = value
        return cls(**{group: _SUBCONFIGS[group](**values) for group, values in groups.items()})

    def replace(self, **kwargs: Any) -> EngineConfig:
        """A copy with flat fields replaced (see `from_kwargs`)."""
        flat = {
            f.name: getattr(getattr(self, g), f.name)
            for g, sub in _SUBCONFIGS.items()
            for f in dataclasses.fields(sub)
        }
        flat.update(kwargs)
        return EngineConfig.from_kwargs(**flat)


_SUBCONFIGS: dict[str, type] = {
    "model": ModelConfig,
    "cache": CacheConfig,
    "scheduler": SchedulerConfig,
    "device": DeviceConfig,
    "encoder": EncoderConfig,
}


def validate(config: EngineConfig) -> None:
    """All config checks live here; each error names the option."""
    m, c, s, d, e = config.model, config.cache, config.scheduler, config.device, config.encoder
    if m.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {m.dtype!r}")
    if m.load_format not in LOAD_FORMATS:
        raise ValueError(f"load_format must be one of {LOAD_FORMATS}, got {m.load_format!r}")
    if m.max_model_len is not None and m.max_model_len < 1:
        raise ValueError(f"max_model_len must be positive, got {m.max_model_len}")
    if c.block_size < 1:
        raise ValueError(f"block_size must be positive, got {c.block_size}")
    if c.num_kv_blocks is not None and c.num_kv_blocks < 1:
        raise ValueError(f"num_kv_blocks must be positive, got {c.num_kv_blocks}")
    if not 0.0 < c.gpu_memory_utilization <= 1.0:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {c.gpu_memory_utilization}")
    if c.cpu_kv_cache_bytes < 1:
        raise ValueError(f"cpu_kv_cache_bytes must be positive, got {c.cpu_kv_cache_bytes}")
    if s.max_num_batched_tokens < 1:
        raise ValueError(f"max_num_batched_tokens must be positive, got {s.max_num_batched_tokens}")
    if s.max_num_seqs < 1:
        raise ValueError(f"max_num_seqs must be positive, got {s.max_num_seqs}")
    if s.max_num_encoder_tokens < 1:
        raise ValueError(f"max_num_encoder_tokens must be positive, got {s.max_num_encoder_tokens}")
    if s.long_prefill_token_threshold < 0:
        raise ValueError("long_prefill_token_threshold must be >= 0")
    if s.mixed_step_token_budget < -1:
        raise ValueError("mixed_step_token_budget must be -1 (auto), 0 (off) or positive")
    if s.async_scheduling not in ASYNC_SCHEDULING:
        raise ValueError(f"async_scheduling must be one of {ASYNC_SCHEDULING}, got {s.async_scheduling!r}")
    if d.attention_backend not in ATTENTION_BACKENDS:
        raise ValueError(
            f"attention_backend must be one of {ATTENTION_BACKENDS}, got {d.attention_backend!r}"
        )
    if not _is_device_name(d.device):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {d.device!r}")
    if e.encoder_mode not in ENCODER_MODES:
        raise ValueError(f"encoder_mode must be one of {ENCODER_MODES}, got {e.encoder_mode!r}")
    counts = (
        "num_vision_workers",
        "num_video_workers",
        "num_audio_workers",
        "max_encoder_jobs_in_flight",
        "num_preprocess_workers",
    )
    for name in counts:
        if getattr(e, name) < 1:
            raise ValueError(f"{name} must be positive, got {getattr(e, name)}")
    if not _is_device_name(e.encoder_device):
        raise ValueError(
            f"encoder_device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {e.encoder_device!r}"
        )


def _is_device_name(name: str) -> bool:
    return name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())
