"""linear_triton / linear_silu_mul_triton (skinny GEMM of decode-sized batches) vs the torch references."""

from __future__ import annotations

import pytest
import torch
from kernel_testing import DTYPES, check_gated_projection, check_projection, import_kernel, projection_inputs

triton_linear = import_kernel("linear_triton")

# (M, N, K): ragged N (not a multiple of BLOCK_N), K a multiple of BLOCK_K and not
SHAPES = [(1, 48, 64), (3, 100, 96), (16, 40, 160), (7, 16, 32)]
CONFIGS = [None, triton_linear.LinearConfig(32, 64, 4, 2)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_linear_matches_reference(shape, dtype, with_bias, config) -> None:
    check_projection(triton_linear.linear_triton, shape, dtype, with_bias, config, column_offset=4)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_linear_silu_mul_matches_reference(shape, dtype, config) -> None:
    check_gated_projection(triton_linear.linear_silu_mul_triton, shape, dtype, config, column_offset=4)


def test_too_many_rows_is_refused() -> None:
    rows = triton_linear.MAX_ROWS + 1
    x, weight, _ = projection_inputs(rows, 16, 32, torch.float32, seed=0, column_offset=4)
    with pytest.raises(ValueError, match="at most"):
        triton_linear.linear_triton(x, weight)


def test_serves_decode_sized_rows_outside_the_one_wave_middle_zone() -> None:
    sms = 132
    assert triton_linear.serves(1, 3584, sms) and triton_linear.serves(16, 3584, sms)  # o_proj, down
    assert triton_linear.serves(1, 18944, sms) and triton_linear.serves(1, 152064, sms)  # gate|up, lm_head
    assert not triton_linear.serves(1, 4608, sms)  # qkv: cuBLAS measured faster
    assert not triton_linear.serves(17, 3584, sms) and not triton_linear.serves(0, 3584, sms)


def test_configs_fit_one_wave_or_use_32_column_programs() -> None:
    sms = 132
    o_proj = triton_linear.pick_linear_config(3584, 3584, sms)
    assert o_proj.block_n == 32 and -(-3584 // o_proj.block_n) <= sms
    gated = triton_linear.pick_linear_config(18944, 3584, sms, silu_mul=True)
    plain = triton_linear.pick_linear_config(152064, 3584, sms)
    assert gated.block_n == plain.block_n == 32 and gated.block_k == plain.block_k // 2
    assert triton_linear.pick_linear_config(3584, 3584, sms, on_gpu=False).num_stages == 1
    # 16 rows (decode graphs of 9-16 requests): deeper K steps, fewer stages, the same bytes in flight
    o_proj_16 = triton_linear.pick_linear_config(3584, 3584, sms, num_rows=16)
    assert o_proj_16.block_n == o_proj.block_n and o_proj_16.block_k == 2 * o_proj.block_k
    assert o_proj_16.block_k * o_proj_16.num_stages == o_proj.block_k * o_proj.num_stages


def test_pdl_is_off_on_cpu_and_for_big_launches(monkeypatch) -> None:
    pdl = import_kernel("pdl")
    assert not pdl.pdl_enabled(torch.device("cpu"), 1)
    if torch.cuda.is_available():
        capable = torch.cuda.get_device_capability()[0] >= 9
        assert pdl.pdl_enabled(torch.device("cuda"), pdl.MAX_ROWS) == capable
        assert not pdl.pdl_enabled(torch.device("cuda"), pdl.MAX_ROWS + 1)
        monkeypatch.setenv("OMNISERVE_PDL", "0")
        assert not pdl.pdl_enabled(torch.device("cuda"), 1)
