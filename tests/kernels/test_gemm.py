"""gemm_triton / gemm_silu_mul_triton (tiled GEMM of mid-sized batches, TMA loads) vs the torch references."""

from __future__ import annotations

import pytest
import torch
from kernel_testing import (
    DEVICE,
    DTYPES,
    ON_GPU,
    check_gated_projection,
    check_projection,
    import_kernel,
    projection_inputs,
)

gemm = import_kernel("gemm_triton")

# (M, N, K): M and N not multiples of the tiles; K a multiple of BLOCK_K and not (TMA reads the tail as zero)
SHAPES = [(17, 48, 64), (37, 100, 96), (64, 40, 160), (20, 16, 40)]
CONFIGS = [None, gemm.GemmConfig(32, 32, 32, 4, 2)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_gemm_matches_reference(shape, dtype, with_bias, config) -> None:
    check_projection(gemm.gemm_triton, shape, dtype, with_bias, config, column_offset=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_gemm_silu_mul_matches_reference(shape, dtype, config) -> None:
    check_gated_projection(gemm.gemm_silu_mul_triton, shape, dtype, config, column_offset=0)


def test_inputs_unfit_for_tma_are_refused() -> None:
    x, weight, _ = projection_inputs(20, 16, 32, torch.float16, seed=0, column_offset=0)
    shifted = torch.empty(20, 33, dtype=torch.float16, device=DEVICE)[:, 1:]  # base 2 bytes off alignment
    shifted.copy_(x)
    assert gemm.tma_compatible(x) and not gemm.tma_compatible(shifted) and not gemm.tma_compatible(x.t())
    with pytest.raises(ValueError, match="16-byte"):
        gemm.gemm_triton(shifted, weight)


def test_gated_variant_serves_17_to_64_rows() -> None:
    assert not gemm.serves_gated(16) and gemm.serves_gated(17) and gemm.serves_gated(64)
    assert not gemm.serves_gated(65) and not gemm.serves_gated(256)
    assert gemm.pick_gemm_config(24).block_m == 32 and gemm.pick_gemm_config(48).block_m == 64


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs CUDA")
def test_ops_route_mid_sized_gate_up_to_the_tiled_kernel(monkeypatch) -> None:
    """`ops.linear_silu_mul` at 17-64 rows runs the tiled kernel (bit-identical to calling it), and its result
    matches cuBLAS + silu_and_mul; OMNISERVE_SKINNY_GEMM=0 gives cuBLAS's."""
    ops = import_kernel("ops")
    x, weight, _ = projection_inputs(40, 2 * 96, 128, torch.bfloat16, seed=5, column_offset=0)
    routed = ops.linear_silu_mul(x, weight)
    assert torch.equal(routed, gemm.gemm_silu_mul_triton(x, weight))
    monkeypatch.setenv("OMNISERVE_SKINNY_GEMM", "0")
    cublas = ops.linear_silu_mul(x, weight)
    torch.testing.assert_close(routed.float(), cublas.float(), atol=3e-2, rtol=3e-2)
