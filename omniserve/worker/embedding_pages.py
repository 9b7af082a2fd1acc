"""Embedding pages: encoder output rows stored in pages of the shared pool tensor.

A page of the pool is `page_elements` contiguous elements (one KV block of every layer); used as an
embedding page, its first rows_per_page * H elements hold `rows_per_page` rows of H:

    pool.view(num_pages, -1):  page p  [ row 0 (H) | row 1 (H) | ... | row rows_per_page-1 | unused tail ]
    embedding_view:            [num_pages, rows_per_page, H]

Row r of a media item lives in page page_ids[r // rows_per_page], row r % rows_per_page. The model runner
(in-process encoding, and reading rows into prefill chunks) and the encoder workers (writing rows through
the shared tensor) use the same two functions, so both sides agree on the layout.
"""

from __future__ import annotations

import torch


def embedding_view(pool: torch.Tensor, rows_per_page: int, hidden_size: int) -> torch.Tensor:
    """[num_pages, rows_per_page, H] view of the pool tensor (no copy)."""
    num_pages = pool.shape[0]
    return pool.view(num_pages, -1)[:, : rows_per_page * hidden_size].view(
        num_pages, rows_per_page, hidden_size
    )


def write_rows(view: torch.Tensor, page_ids: list[int], rows: torch.Tensor, num_tokens: int) -> None:
    """Write an item's rows [num_tokens, H] into its pages (cast to the pool dtype, on the pool device)."""
    if rows.shape[0] != num_tokens:
        raise RuntimeError(f"encoder gave {rows.shape[0]} rows for an item of {num_tokens} tokens")
    rows_per_page = view.shape[1]
    index = torch.arange(num_tokens, device=view.device)
    pages = torch.tensor(page_ids, device=view.device)[index // rows_per_page]
    view[pages, index % rows_per_page] = rows.to(view.device, view.dtype)
