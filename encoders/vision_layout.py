"""Index arithmetic of one packed batch of images/videos for the Qwen2.5 vision tower (host-side, no weights).

In: `grid_thw` [num_items, 3] (frames t, patch rows h, patch columns w per item, as the processor emits) and
the config scalars. Out: a `VisionLayout` the tower uses in every layer.

Token orders. The processor emits patches item by item, frame by frame, and inside a frame in merge-group
order: the m x m patches (m = spatial_merge_size) that the merger fuses into one output token are adjacent.
A "unit" is such a group; units are in raster order over the merged grid (h/m rows, w/m columns):

    patches of a 4x4 frame (m=2):   unit:  0 0 1 1     patch order: 0 1 4 5
                                           0 0 1 1                  2 3 6 7
                                           2 2 3 3                  8 9 ...
                                           2 2 3 3

The window layers attend inside windows of window_size px = W units a side (W = 112 / 14 / 2 = 4), tiled
from the frame's top-left corner; edge windows are smaller. The tower runs in window order: units sorted
by (frame, window row, window column), raster order inside a window, so each window is one contiguous
sequence. `window_index[i]` is the unit (processor order) at window-order slot i, exactly transformers'
`get_vision_window_index`; outputs go back to processor order through `reverse_index`. Full-attention
layers attend over one frame (not the whole video): frames stay contiguous in window order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omniserve.encoders.varlen_attention import VarlenPlan, plan_varlen


@dataclass(frozen=True)
class VisionLayout:
    """Where every patch of a packed image/video batch goes, in the tower's window order."""

    # [num_units] int64: the unit (merge group, processor order) at each window-order slot
    window_index: torch.Tensor
    # [num_units] int64: the window-order slot of each unit (inverse permutation of window_index)
    reverse_index: torch.Tensor
    # [num_patches, 2] int64: (row, column) of each patch inside its frame, in window order (2-D rotary)
    positions: torch.Tensor
    # sequences of the window layers (one per window, in patches)
    window_plan: VarlenPlan
    # sequences of the full-attention layers (one per frame, in patches)
    frame_plan: VarlenPlan
    # output tokens (units) of each item, in item order: sizes to split the tower's output by
    tokens_per_item: list[int]


def build_vision_layout(
    grid_thw: torch.Tensor | list[list[int]], spatial_merge_size: int, window_size: int, patch_size: int,
    device: torch.device | str = "cpu",
) -> VisionLayout:
    grids = grid_thw.tolist() if isinstance(grid_thw, torch.Tensor) else [list(g) for g in grid_thw]
    merge = spatial_merge_size
    units_per_window_side = window_size // merge // patch_size
    if units_per_window_side < 1:
        raise ValueError(f"window_size {window_size} is smaller than one merged patch "
                         f"({merge * patch_size} px)")
    window_index, positions, window_lengths, frame_lengths, tokens_per_item = [], [], [], [], []
    unit_offset = 0
    for t, h, w in grids:
        if t < 1 or h < 1 or w < 1 or h % merge or w % merge:
            raise ValueError(f"grid (t={t}, h={h}, w={w}) must be positive with h, w divisible by {merge}")
        unit_rows, unit_cols = h // merge, w // merge
        windows_down = -(-unit_rows // units_per_window_side)
        windows_across = -(-unit_cols // units_per_window_side)
        rows = torch.arange(unit_rows)[:, None] // units_per_window_side  # [R, 1] window row
        cols = torch.arange(unit_cols)[None, :] // units_per_window_side  # [1, C] window column
        window_in_frame = (rows * windows_across + cols).flatten()  # [R*C] raster over units
        frames = torch.arange(t)[:, None] * (windows_down * windows_across)  # [t, 1]
        window_id = (frames + window_in_frame[None, :]).flatten()  # [t*R*C]
        # stable sort keeps raster order inside each window
        window_index.append(torch.argsort(window_id, stable=True) + unit_offset)
        window_lengths.append(torch.bincount(window_id) * merge * merge)
        frame_lengths += [h * w] * t
        # patch (row, column) in processor order: [R, C, m, m] -> flattened unit-major, repeated per frame
        row = torch.arange(unit_rows)[:, None, None, None] * merge + torch.arange(merge)[None, None, :, None]
        col = torch.arange(unit_cols)[None, :, None, None] * merge + torch.arange(merge)[None, None, None, :]
        row, col = torch.broadcast_tensors(row, col)
        positions.append(torch.stack([row.flatten(), col.flatten()], dim=-1).repeat(t, 1))  # [t*h*w, 2]
        tokens_per_item.append(t * unit_rows * unit_cols)
        unit_offset += t * unit_rows * unit_cols
    if not grids:
        raise ValueError("grid_thw is empty")
    window_index_all = torch.cat(window_index)  # [U]
    unit_positions = torch.cat(positions).view(unit_offset, merge * merge, 2)  # [U, m*m, 2] processor order
    window_bounds = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cat(window_lengths).cumsum(0)])
    frame_bounds = torch.tensor([0] + frame_lengths).cumsum(0)
    return VisionLayout(
        window_index=window_index_all.to(device),
        reverse_index=torch.argsort(window_index_all).to(device),
        positions=unit_positions[window_index_all].reshape(-1, 2).to(device),
        window_plan=plan_varlen(window_bounds, device),
        frame_plan=plan_varlen(frame_bounds, device),
        tokens_per_item=tokens_per_item,
    )
