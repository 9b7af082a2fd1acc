"""Vision tower parity with transformers 5.x on tiny Qwen2.5-Omni and Qwen2.5-VL checkpoints (CPU, fp32)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from omniserve.encoders.vision_layout import build_vision_layout
from omniserve.encoders.vision_tower import OMNI_VISION_PREFIX, QWEN2_5_VL_VISION_PREFIX, VisionTower
from tiny_towers import (
    TinyCheckpoint,
    build_tiny_omni,
    build_tiny_qwen2_5_vl,
    max_abs_error,
    vision_reference,
)

# Several images packed with a video: one exact window (8x8 patches = 4x4 units), windows cut at the edges
# in both directions, a 3-frame video, a single unit, and a 2-frame video wider than tall.
GRIDS = [[1, 8, 8], [1, 6, 10], [1, 20, 18], [3, 10, 12], [1, 2, 2], [2, 16, 34]]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def omni(tmp_path_factory: pytest.TempPathFactory) -> TinyCheckpoint:
    return build_tiny_omni(tmp_path_factory.mktemp("omni") / "ckpt")


@pytest.fixture(scope="module")
def qwen2_5_vl(tmp_path_factory: pytest.TempPathFactory) -> TinyCheckpoint:
    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("qwen2_5_vl") / "ckpt")


@pytest.fixture(scope="module")
def pixel_values() -> torch.Tensor:
    num_patches = sum(t * h * w for t, h, w in GRIDS)
    return torch.randn(num_patches, 1176, generator=torch.Generator().manual_seed(5))


def load_tower(checkpoint: TinyCheckpoint, prefix: str) -> VisionTower:
    tower = VisionTower.from_hf_config(checkpoint.model.config)
    tower.load_weights(checkpoint.weights.items(), prefix)
    return tower.eval()


@torch.no_grad()
def reference(checkpoint: TinyCheckpoint, pixel_values: torch.Tensor) -> torch.Tensor:
    return vision_reference(checkpoint)(pixel_values, grid_thw=torch.tensor(GRIDS)).pooler_output


def test_layout_matches_transformers_index_helpers() -> None:
    helpers = pytest.importorskip("transformers.vision_utils")  # these helpers are new in transformers 5.2x
    get_vision_cu_seqlens = helpers.get_vision_cu_seqlens
    get_vision_position_ids = helpers.get_vision_position_ids
    get_vision_window_index = helpers.get_vision_window_index

    grid = torch.tensor(GRIDS)
    layout = build_vision_layout(grid, spatial_merge_size=2, window_size=112, patch_size=14)
    window_index, cu_window_seqlens = get_vision_window_index(grid, 2, 112, 14)
    assert torch.equal(layout.window_index, window_index)
    assert torch.equal(layout.window_plan.cu_seqlens, cu_window_seqlens)
    assert torch.equal(layout.frame_plan.cu_seqlens, get_vision_cu_seqlens(grid))
    positions = get_vision_position_ids(grid, 2).view(-1, 4, 2)[window_index].view(-1, 2)
    assert torch.equal(layout.positions, positions)
    assert torch.equal(layout.window_index[layout.reverse_index], torch.arange(len(window_index)))
    assert layout.tokens_per_item == [t * h * w // 4 for t, h, w in GRIDS]


@pytest.mark.parametrize("model", ["omni", "qwen2_5_vl"])
@torch.no_grad()
def test_tower_matches_transformers(
    model: str, request: pytest.FixtureRequest, pixel_values: torch.Tensor
) -> None:
    checkpoint = request.getfixturevalue(model)
    prefix = OMNI_VISION_PREFIX if model == "omni" else QWEN2_5_VL_VISION_PREFIX
    expected = reference(checkpoint, pixel_values)
    out = load_tower(checkpoint, prefix)(pixel_values, GRIDS)
    error = max_abs_error(out, expected)
    largest = expected.abs().max().item()
    print(f"{model} vision tower: max abs error {error:.2e} (outputs up to {largest:.2f})")
    assert error <= TOLERANCE


@torch.no_grad()
def test_items_are_independent_and_split_in_order(omni: TinyCheckpoint, pixel_values: torch.Tensor) -> None:
    tower = load_tower(omni, OMNI_VISION_PREFIX)
    layout = tower.build_layout(GRIDS)
    packed = tower(pixel_values, layout=layout).split(layout.tokens_per_item)
    patch_offsets = torch.tensor([0] + [t * h * w for t, h, w in GRIDS]).cumsum(0).tolist()
    for index in (3, 4):  # the video and the single unit, each encoded alone
        alone = tower(pixel_values[patch_offsets[index] : patch_offsets[index + 1]], [GRIDS[index]])
        assert max_abs_error(alone, packed[index]) <= TOLERANCE


@torch.no_grad()
def test_comparison_detects_wrong_windows_and_rotary(
    omni: TinyCheckpoint, pixel_values: torch.Tensor
) -> None:
    """The parity test can fail: windows in every layer, full attention in every layer, or no rotary, each
    move the outputs far past the tolerance."""
    tower = load_tower(omni, OMNI_VISION_PREFIX)
    expected = reference(omni, pixel_values)
    layout = tower.build_layout(GRIDS)
    no_windows = dataclasses.replace(layout, window_plan=layout.frame_plan)
    no_full_attention = dataclasses.replace(layout, frame_plan=layout.window_plan)
    no_rotary = dataclasses.replace(layout, positions=torch.zeros_like(layout.positions))
    for wrong in (no_windows, no_full_attention, no_rotary):
        assert max_abs_error(tower(pixel_values, layout=wrong), expected) > 100 * TOLERANCE


def test_bad_checkpoints_are_named(omni: TinyCheckpoint, qwen2_5_vl: TinyCheckpoint) -> None:
    tower = VisionTower.from_hf_config(omni.model.config)
    weights = dict(omni.weights)
    del weights["thinker.visual.blocks.1.attn.k.weight"]
    del weights["thinker.visual.blocks.2.mlp.up_proj.bias"]
    weights["thinker.visual.blocks.0.attn.extra.weight"] = torch.zeros(2)
    weights["thinker.visual.merger.mlp.2.weight"] = torch.zeros(7, 128)
    with pytest.raises(ValueError) as error:
        tower.load_weights(weights.items(), OMNI_VISION_PREFIX)
    message = str(error.value)
    for expected in (
        "missing",
        "thinker.visual.blocks.1.attn.k.weight",
        "thinker.visual.blocks.2.mlp.up_proj.bias",
        "unknown",
        "thinker.visual.blocks.0.attn.extra.weight",
        "misshaped",
        "thinker.visual.merger.mlp.2.weight (7, 128) (expected (64, 128))",
    ):
        assert expected in message

    vl_tower = VisionTower.from_hf_config(qwen2_5_vl.model.config)
    vl_weights = {
        name: tensor for name, tensor in qwen2_5_vl.weights.items() if "blocks.0.attn.qkv" not in name
    }
    missing = r"2 missing tensors \['visual.blocks.0.attn.qkv.bias', 'visual.blocks.0.attn.qkv.weight'\]"
    with pytest.raises(ValueError, match=missing):
        vl_tower.load_weights(vl_weights.items(), QWEN2_5_VL_VISION_PREFIX)
    with pytest.raises(ValueError, match="missing"):  # the Omni names are not under the VL prefix
        tower.load_weights(omni.weights.items(), QWEN2_5_VL_VISION_PREFIX)


def test_bad_inputs_are_refused(omni: TinyCheckpoint, pixel_values: torch.Tensor) -> None:
    tower = load_tower(omni, OMNI_VISION_PREFIX)
    with pytest.raises(ValueError, match="describes 64 patches"):
        tower(pixel_values, [[1, 8, 8]])
    with pytest.raises(ValueError, match="divisible by 2"):
        tower(pixel_values[:63], [[1, 7, 9]])
    with pytest.raises(ValueError, match=r"pixel_values must be \[num_patches, 1176\]"):
        tower(pixel_values[:, :100], GRIDS)
