"""A client that disconnects mid-request aborts it at once: its pages are free again (read from /metrics)
long before the request could have finished by itself."""

from __future__ import annotations

import time

import httpx
import pytest
from server_harness import API_KEY, RunningServer, shared_server


@pytest.fixture(scope="module")
def server(request, checkpoint_factory, tmp_path_factory) -> RunningServer:
    return shared_server(request, checkpoint_factory, tmp_path_factory)


LONG = {
    "messages": [{"role": "user", "content": "Write a very long story"}],
    "max_tokens": 480,
    "ignore_eos": True,
}


def wait_until_idle(server: RunningServer, timeout_s: float = 5.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        metrics = server.metrics()
        idle = (
            metrics["omniserve_num_requests_running"] == 0 and metrics["omniserve_num_requests_waiting"] == 0
        )
        if idle and metrics["omniserve_kv_blocks_free"] == metrics["omniserve_kv_blocks_total"]:
            return metrics
        if time.monotonic() > deadline:
            pytest.fail(f"pages still held {timeout_s} s after the disconnect: {metrics}")
        time.sleep(0.05)


def test_streaming_client_disconnect_frees_pages(server: RunningServer) -> None:
    before = wait_until_idle(server)
    with server.client() as client:
        with client.stream("POST", "/v1/chat/completions", json={**LONG, "stream": True}) as response:
            lines = response.iter_lines()
            received = [line for line, _ in zip(lines, range(8), strict=False) if line.startswith("data: {")]
            during = server.metrics()
            assert during["omniserve_num_requests_running"] == 1
            assert during["omniserve_kv_blocks_free"] < during["omniserve_kv_blocks_total"]  # pages are held
        # Leaving the block closes the half-read response: the connection drops.
    disconnected_at = time.monotonic()
    after = wait_until_idle(server)
    assert time.monotonic() - disconnected_at < 3.0
    assert len(received) >= 3
    key = 'omniserve_request_finished_total{finished_reason="abort"}'
    assert after[key] == before[key] + 1
    generated = after["omniserve_generation_tokens_total"] - before["omniserve_generation_tokens_total"]
    assert generated < 480  # it was cut short, not run to the end


def test_non_streaming_client_disconnect_frees_pages(server: RunningServer) -> None:
    before = wait_until_idle(server)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/v1/chat/completions", json=LONG, headers=headers, timeout=0.5)
    after = wait_until_idle(server)
    key = 'omniserve_request_finished_total{finished_reason="abort"}'
    assert after[key] == before[key] + 1
    assert after["omniserve_generation_tokens_total"] - before["omniserve_generation_tokens_total"] < 480
