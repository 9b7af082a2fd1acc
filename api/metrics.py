"""GET /metrics: Prometheus text exposition (format 0.0.4), written by hand (no extra dependency).

In: `EngineStats` (a fresh snapshot from the engine process: queues, pages, caches) and the frontend's
`ServingMetrics` (latency histograms, token counters). Out: `omniserve_*` metrics, one `# HELP` and
`# TYPE` line each, labelled with the served model name.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from omniserve.api.server_state import get_state

from omniserve.core.messages import EngineStats
from omniserve.metrics import Histogram, ServingMetrics

router = APIRouter()
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Writer:
    def __init__(self, model: str) -> None:
        self.labels = 'model_name="' + model.replace("\\", "\\\\").replace('"', '\\"') + '"'
        self.lines: list[str] = []

    def metric(self, name: str, kind: str, help_text: str, value: float, extra: str = "") -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        self.sample(name, value, extra)

    def sample(self, name: str, value: float, extra: str = "") -> None:
        labels = self.labels + ("," + extra if extra else "")
        self.lines.append(
            f"{name}{{{labels}}} {value:g}" if isinstance(value, float) else f"{name}{{{labels}}} {value}"
        )

    def histogram(self, name: str, help_text: str, histogram: Histogram) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for bound, count in zip((*histogram.buckets, float("inf")), histogram.cumulative(), strict=True):
            self.sample(f"{name}_bucket", count, f'le="{"+Inf" if bound == float("inf") else f"{bound:g}"}"')
        self.sample(f"{name}_sum", float(histogram.total))
        self.sample(f"{name}_count", histogram.count)


def render(model: str, stats: EngineStats | None, metrics: ServingMetrics) -> str:
    out = _Writer(model)
    if stats is not None:
        out.metric(
            "omniserve_num_requests_running",
            "gauge",
            "Requests the scheduler runs (holding pages).",
            stats.num_running,
        )
        out.metric(
            "omniserve_num_requests_waiting", "gauge", "Requests queued for admission.", stats.num_waiting
        )
        out.metric(
            "omniserve_kv_blocks_total", "gauge", "Pages in the KV cache pool.", stats.num_kv_blocks_total
        )
        out.metric(
            "omniserve_kv_blocks_free",
            "gauge",
            "Pages free or evictable (cached but unreferenced).",
            stats.num_kv_blocks_free,
        )
        out.metric(
            "omniserve_kv_cache_usage_ratio",
            "gauge",
            "Fraction of pages referenced by requests.",
            1.0 - stats.num_kv_blocks_free / max(stats.num_kv_blocks_total, 1),
        )
        out.metric(
            "omniserve_kv_blocks_used_peak",
            "gauge",
            "Most pages referenced at once since start.",
            stats.num_kv_blocks_used_peak,
        )
        out.metric(
            "omniserve_num_preemptions_total",
            "counter",
            "Requests preempted for lack of pages.",
            stats.num_preemptions,
        )
        out.metric(
            "omniserve_prefix_cache_queries_total",
            "counter",
            "Prompt tokens looked up in the prefix cache.",
            stats.prefix_cache_queries,
        )
        out.metric(
            "omniserve_prefix_cache_hits_total",
            "counter",
            "Prompt tokens served by the prefix cache.",
            stats.prefix_cache_hits,
        )
    # No encoders yet (text-only models): the counters exist so dashboards need no change when they land.
    out.metric(
        "omniserve_encoder_cache_queries_total", "counter", "Media items looked up in the encoder cache.", 0
    )
    out.metric("omniserve_encoder_cache_hits_total", "counter", "Media items served by the encoder cache.", 0)
    out.metric(
        "omniserve_num_requests_in_flight",
        "gauge",
        "Requests the API process is serving.",
        metrics.num_requests_in_flight,
    )
    out.metric(
        "omniserve_request_received_total",
        "counter",
        "Engine requests received (n > 1 counts n).",
        metrics.num_requests_received,
    )
    out.lines += [
        "# HELP omniserve_request_finished_total Engine requests finished, by reason.",
        "# TYPE omniserve_request_finished_total counter",
    ]
    for reason in (
        "stop",
        "length",
        "abort",
        *sorted(set(metrics.num_requests_finished) - {"stop", "length", "abort"}),
    ):
        out.sample(
            "omniserve_request_finished_total",
            metrics.num_requests_finished.get(reason, 0),
            f'finished_reason="{reason}"',
        )
    out.metric(
        "omniserve_prompt_tokens_total",
        "counter",
        "Prompt tokens of received requests.",
        metrics.prompt_tokens_total,
    )
    out.metric(
        "omniserve_generation_tokens_total", "counter", "Tokens generated.", metrics.generation_tokens_total
    )
    out.metric(
        "omniserve_generation_tokens_per_second",
        "gauge",
        "Tokens generated per second, last 10 s.",
        round(metrics.generation_tokens_per_second(), 3),
    )
    out.histogram(
        "omniserve_time_to_first_token_seconds", "Arrival to first token.", metrics.time_to_first_token
    )
    out.histogram(
        "omniserve_inter_token_latency_seconds",
        "Time between two tokens of a request.",
        metrics.inter_token_latency,
    )
    out.histogram("omniserve_e2e_request_latency_seconds", "Arrival to finish.", metrics.e2e_latency)
    out.metric(
        "omniserve_engine_alive", "gauge", "1 while the engine process runs.", 1 if stats is not None else 0
    )
    return "\n".join(out.lines) + "\n"


@router.get("/metrics")
async def metrics(request: Request) -> PlainTextResponse:
    state = get_state(request)
    stats = None
    if state.omni.is_alive:
        try:
            stats = await state.omni.stats(timeout_s=10.0)
        except (RuntimeError, asyncio.TimeoutError):
            stats = None
    return PlainTextResponse(render(state.model_name, stats, state.omni.metrics), media_type=CONTENT_TYPE)
