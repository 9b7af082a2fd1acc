"""PagePool: allocation, ref counts, prefix hits, LRU eviction (CPU bookkeeping only)."""

from __future__ import annotations

from factories import make_request

from omniserve.core.page_pool import PagePool


def test_allocate_and_free_returns_every_page() -> None:
    pool = PagePool(num_pages=10, block_size=4)
    request = make_request(num_prompt_tokens=9)
    assert pool.allocate(request, 9)
    assert len(pool.page_ids(request.request_id)) == 3  # ceil(9 / 4)
    assert pool.num_free_pages == 7
    request.num_computed_tokens = 9
    assert pool.allocate(request, 3)  # 12 tokens still fit 3 pages
    assert pool.num_free_pages == 7
    request.num_computed_tokens = 12
    assert pool.allocate(request, 1)  # the 13th token needs a 4th page
    assert pool.num_free_pages == 6
    pool.free(request.request_id)
    assert pool.num_free_pages == 10
    assert all(page.ref_count == 0 for page in pool.pages)
    assert pool.peak_used_pages == 4


def test_allocation_is_all_or_nothing() -> None:
    pool = PagePool(num_pages=3, block_size=4)
    big = make_request(num_prompt_tokens=16)
    assert not pool.allocate(big, 16)
    assert pool.num_free_pages == 3 and pool.page_ids(big.request_id) == []


def test_prefix_hit_shares_pages_and_counts_refs() -> None:
    pool = PagePool(num_pages=16, block_size=4)
    prompt = list(range(1, 14))  # 13 tokens: 3 full blocks + 1
    first = make_request(prompt=prompt)
    assert pool.allocate(first, 13)
    second = make_request(prompt=prompt[:12] + [99, 98])
    hits = pool.find_cached_prefix(second)
    assert [p.page_id for p in hits] == pool.page_ids(first.request_id)[:3]
    assert pool.allocate(second, 2, hits)
    assert pool.page_ids(second.request_id)[:3] == pool.page_ids(first.request_id)[:3]
    assert all(pool.pages[i].ref_count == 2 for i in pool.page_ids(first.request_id)[:3])
    pool.free(first.request_id)
    assert all(pool.pages[i].ref_count == 1 for i in pool.page_ids(second.request_id)[:3])


def test_prefix_hit_leaves_one_token_to_compute() -> None:
    pool = PagePool(num_pages=8, block_size=4)
    prompt = list(range(8))  # exactly 2 full blocks
    first = make_request(prompt=prompt)
    assert pool.allocate(first, 8)
    again = make_request(prompt=prompt)
    assert len(pool.find_cached_prefix(again)) == 1  # the last block is recomputed for logits


def test_different_prefix_misses_even_with_equal_later_block() -> None:
    pool = PagePool(num_pages=8, block_size=4)
    first = make_request(prompt=[1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert pool.allocate(first, 9)
    other = make_request(prompt=[0, 2, 3, 4, 5, 6, 7, 8, 9])  # block 1 equal, block 0 differs
    assert pool.find_cached_prefix(other) == []  # chained hashes


def test_freed_cached_pages_survive_until_evicted_lru() -> None:
    pool = PagePool(num_pages=4, block_size=2)
    old = make_request(prompt=[1, 2, 3, 4, 5])  # 2 full blocks + 1 partial
    assert pool.allocate(old, 5)
    pool.free(old.request_id)
    # Unhashed (partial) page is reused first; the cached blocks remain findable.
    assert pool.num_free_pages == 4
    probe = make_request(prompt=[1, 2, 3, 4, 5])
    assert len(pool.find_cached_prefix(probe)) == 2
    filler = make_request(prompt=[9, 9])
    assert pool.allocate(filler, 2)  # takes the unhashed page
    assert len(pool.find_cached_prefix(make_request(prompt=[1, 2, 3, 4, 5]))) == 2
    filler2 = make_request(prompt=[8, 8, 8, 8])
    assert pool.allocate(filler2, 4)  # the never-used page, then one eviction: the tail block goes first
    assert len(pool.find_cached_prefix(make_request(prompt=[1, 2, 3, 4, 5]))) == 1
    assert pool.num_free_pages == 1
    assert pool.allocate(make_request(prompt=[6, 6]), 2)  # evicts the first block last
    assert pool.find_cached_prefix(make_request(prompt=[1, 2, 3, 4, 5])) == []


def test_eviction_order_is_least_recently_freed_first() -> None:
    pool = PagePool(num_pages=4, block_size=2)
    a, b = make_request(prompt=[1, 1, 5]), make_request(prompt=[2, 2, 5])
    assert pool.allocate(a, 3) and pool.allocate(b, 3)
    pool.free(a.request_id)  # a's block freed first -> evicted first
    pool.free(b.request_id)
    taker = make_request(prompt=[7, 7, 7, 7, 7, 7])
    assert pool.allocate(taker, 6)  # 3 pages: 2 unhashed + the oldest cached (a's)
    assert pool.find_cached_prefix(make_request(prompt=[1, 1, 5])) == []
    assert len(pool.find_cached_prefix(make_request(prompt=[2, 2, 5]))) == 1


def test_prefix_caching_off_never_hits() -> None:
    pool = PagePool(num_pages=8, block_size=2, enable_prefix_caching=False)
    first = make_request(prompt=[1, 2, 3, 4, 5])
    assert pool.allocate(first, 5)
    assert pool.find_cached_prefix(make_request(prompt=[1, 2, 3, 4, 5])) == []
    assert pool.cached_pages == {}
