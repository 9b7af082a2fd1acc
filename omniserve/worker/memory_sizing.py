"""How many pages the pool can have: a byte budget on CPU; on GPU, what is left of the configured fraction of
device memory after the weights, the activation peak of a profiling step at full budget (the decoder forward
and, for in-process encoding, the encoders at the full encoder budget) and the encoder workers' share.

In: a `ModelRunner` whose model is loaded and whose pool is not allocated yet. Out: a page count.
"""

from __future__ import annotations

import torch

from omniserve.attention.forward_context import forward_context
from omniserve.multimodal import EncoderInput
from omniserve.sampling_params import SamplingParams

WORKER_GPU_OVERHEAD_BYTES = 2 * 1024**3  # per encoder worker on the engine's GPU: CUDA context + activations


def determine_num_pages(runner, reserved_bytes: int = 0) -> int:
    """Pages that fit; `reserved_bytes` is what encoder worker processes on this device will take."""
    cache = runner.config.cache
    if cache.num_kv_blocks is not None:
        return cache.num_kv_blocks
    if runner.device.type != "cuda":
        return max(cache.cpu_kv_cache_bytes // runner.page_bytes, 1)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(runner.device)
    profile_step(runner)
    torch.cuda.synchronize(runner.device)
    peak = torch.cuda.max_memory_allocated(runner.device)
    free, total = torch.cuda.mem_get_info(runner.device)
    outside_torch = (total - free) - torch.cuda.memory_reserved(runner.device)
    available = total * cache.gpu_memory_utilization - peak - outside_torch - reserved_bytes
    num_pages = int(available // runner.page_bytes)
    if num_pages < 1:
        raise RuntimeError(
            f"no GPU memory left for the KV pool (weights + activations use {peak / 2**30:.1f} GiB, encoder "
            f"workers {reserved_bytes / 2**30:.1f} GiB); raise gpu_memory_utilization or lower "
            f"max_num_batched_tokens / max_num_encoder_tokens"
        )
    return num_pages


@torch.inference_mode()
def profile_step(runner) -> None:
    """A forward at the full token budget on a throwaway pool, then the in-process encoders at theirs."""
    from omniserve.worker.model_runner import RequestState

    num_tokens = runner.config.scheduler.max_num_batched_tokens
    num_pages = -(-num_tokens // runner.block_size)
    runner.allocate_pool(num_pages)
    state = RequestState("profile", [0] * num_tokens, num_tokens, SamplingParams(max_tokens=1), [],
                         list(range(num_pages)), 0)  # fmt: skip
    runner.states[state.request_id] = state
    num_rows = min(runner.config.scheduler.max_num_seqs, num_tokens)
    input_ids, positions, metadata, _ = runner._device_inputs(runner._build_batch({"profile": num_tokens}))
    with forward_context(runner._forward_context(metadata)):
        hidden = runner.model(input_ids, positions)
    runner.model.compute_logits(hidden[:num_rows]).float()  # + the sampler's fp32 copy (random rows)
    del hidden
    profile_encoders(runner)
    del runner.states["profile"]
    runner.pool = None
    for layer in runner.model.attention_layers():  # drop the views so the throwaway pool is freed
        layer.bind_kv_cache(None, None)


def profile_encoders(runner) -> None:
    """Run the in-process encoders once at the full encoder budget (`max_num_encoder_tokens` rows of images
    and of audio). Workers encode in their own processes and are not profiled here."""
    model = runner.model
    encode_many = getattr(model, "encode_many", None)
    if encode_many is None or runner.config.encoder.encoder_mode == "workers":
        return
    rows = runner.config.scheduler.max_num_encoder_tokens
    items = []
    if getattr(model, "visual", None) is not None:
        vision = model.visual.config
        merge = vision.spatial_merge_size
        height = 16 * merge  # patches; the width makes up `rows` merged tokens
        width = max(merge, -(-rows * merge * merge // height // merge) * merge)
        patches = torch.zeros(height * width, vision.patch_dim)  # [patches, C*T*P*P]
        items.append(EncoderInput("image", pixel_values=patches, grid_thw=(1, height, width)))
    if getattr(model, "audio_tower", None) is not None:
        mel_bins = model.audio_tower.config.num_mel_bins
        items.append(EncoderInput("audio", features=torch.zeros(mel_bins, 4 * rows)))  # ~rows tokens
    if items:
        encode_many(items)


def hand_towers_to_workers(runner, worker_kinds: dict[str, int], same_device: bool) -> int:
    """Encoder workers hold the towers: drop the engine's copies, and return the GPU bytes the workers will
    take on this device (their towers' weights plus `WORKER_GPU_OVERHEAD_BYTES` each), to keep out of the
    pool."""
    sizes = {}
    for name in ("visual", "audio_tower"):
        module = getattr(runner.model, name, None)
        sizes[name] = sum(p.numel() * p.element_size() for p in module.parameters()) if module else 0
        setattr(runner.model, name, None)
    if runner.device.type == "cuda":
        torch.cuda.empty_cache()
    if runner.device.type != "cuda" or not same_device:
        return 0
    # video workers hold both towers (audio in video is one job)
    per_kind = {"vision": sizes["visual"], "video": sizes["visual"] + sizes["audio_tower"],
                "audio": sizes["audio_tower"]}  # fmt: skip
    return sum(count * (per_kind[kind] + WORKER_GPU_OVERHEAD_BYTES) for kind, count in worker_kinds.items())
