"""`PagePool`: CPU bookkeeping of the shared paged memory pool (no tensors here).

Every page is either referenced by running requests (ref_count > 0) or sits in the free queue. A free
page may still hold a *cached* full block (its content hash is in `cached_pages`): a later request with
the same prefix takes it back without recomputing. Allocation takes pages from the front of the free
queue, evicting whatever cached block they held, so the free queue doubles as the LRU of cached pages:

    free_queue:  front [ unhashed pages ... | cached pages, least recently freed ... most recent ] back
                 allocate() pops here                                        free() appends here

Block hashes are chained: hash(block i) covers the hash of block i-1, so equal hashes mean equal whole
prefixes; a block that covers media placeholders also covers those items' content hashes. Only full blocks
are hashed; a request wastes at most its one partly filled last page.

Embedding pages hold encoder outputs (rows of one media item). They are keyed by (content hash, page index)
in the same map, so equal media reuse one encoding (the encoder cache) and evict like any cached page. A
fresh embedding page is published only once its encoding is committed to a step (`publish_embedding`).
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass

from omniserve.request import Request


@dataclass
class Page:
    page_id: int
    ref_count: int = 0
    block_hash: bytes | None = None  # set while the page holds a cached full block


def embedding_key(content_hash: bytes, page_index: int) -> bytes:
    return hashlib.blake2b(
        b"embedding" + content_hash + page_index.to_bytes(4, "little"), digest_size=16
    ).digest()


def hash_block(parent_hash: bytes | None, token_ids: list[int], extra_key: bytes = b"") -> bytes:
    """Content hash of one full block, chained on its parent. `extra_key` carries what else determines
    the KV (media content hashes for multimodal placeholders)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(parent_hash or b"root")
    digest.update(array("q", token_ids).tobytes())
    digest.update(extra_key)
    return digest.digest()


class PagePool:
    def __init__(self, num_pages: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        self.num_pages = num_pages
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.pages = [Page(i) for i in range(num_pages)]
        self.free_queue: OrderedDict[int, Page] = OrderedDict((p.page_id, p) for p in self.pages)
        self.cached_pages: dict[bytes, Page] = {}  # block hash -> page holding that block
        self.request_pages: dict[str, list[Page]] = {}  # request id -> its pages, in token order
        self.num_hashed_blocks: dict[str, int] = {}  # request id -> leading pages already hashed
        # request id -> media item index -> pages holding that item's embedding rows
        self.embedding_pages: dict[str, dict[int, list[Page]]] = {}
        # Statistics.
        self.peak_used_pages = 0
        self.prefix_queries = 0  # prompt tokens looked up
        self.prefix_hits = 0  # prompt tokens found
        self.encoder_cache_queries = 0  # media items looked up
        self.encoder_cache_hits = 0  # media items found encoded

    # ----- queries ---------------------------------------------------------------------------------
    @property
    def num_free_pages(self) -> int:
        """Pages that allocation can take now (free, or cached but unreferenced)."""
        return len(self.free_queue)

    @property
    def num_used_pages(self) -> int:
        return self.num_pages - len(self.free_queue)

    def page_ids(self, request_id: str, start: int = 0) -> list[int]:
        """The request's page ids from its `start`-th page on."""
        return [p.page_id for p in self.request_pages.get(request_id, ())[start:]]

    def num_request_pages(self, request_id: str) -> int:
        return len(self.request_pages.get(request_id, ()))

    def pages_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # ----- prefix cache ----------------------------------------------------------------------------
    def _extend_block_hashes(self, request: Request, num_tokens: int) -> None:
        """Make `request.block_hashes` cover every full block within its first `num_tokens` tokens."""
        hashes = request.block_hashes
        bs = self.block_size
        for block in range(len(hashes), num_tokens // bs):
            parent = hashes[-1] if hashes else None
            start, end = block * bs, (block + 1) * bs
            media = b"".join(i.content_hash for i in request.mm_items if i.offset < end and i.end > start)
            hashes.append(hash_block(parent, request.token_ids_slice(start, end), media))

    def find_cached_prefix(self, request: Request) -> list[Page]:
        """Longest run of cached full blocks that prefixes the request's tokens. Does not take them
        (no ref counts change); pass the result to `allocate`. Leaves at least one token to compute, so
        the step that admits the request produces its logits."""
        if not self.enable_prefix_caching:
            return []
        max_blocks = (request.num_tokens - 1) // self.block_size
        self._extend_block_hashes(request, max_blocks * self.block_size)
        hits: list[Page] = []
        for block_hash in request.block_hashes[:max_blocks]:
            page = self.cached_pages.get(block_hash)
            if page is None:
                break
            hits.append(page)
        self.prefix_queries += request.num_tokens
        self.prefix_hits += len(hits) * self.block_size
        return hits

    # ----- allocation ------------------------------------------------------------------------------
    def allocate(self, request: Request, num_new_tokens: int, cached_prefix: list[Page] = ()) -> bool:
        """Give the request pages for `cached_prefix` plus `num_new_tokens` more tokens after its
        `num_computed_tokens` (which must not count the prefix yet). All or nothing: returns False and
        changes nothing when the pool is short."""
        pages = self.request_pages.setdefault(request.request_id, [])
        num_tokens_after = request.num_computed_tokens + len(cached_prefix) * self.block_size + num_new_tokens
        num_fresh = self.pages_needed(num_tokens_after) - len(pages) - len(cached_prefix)
        # Cached prefix pages that sit in the free queue stop being allocatable once taken.
        num_prefix_free = sum(1 for p in cached_prefix if p.ref_count == 0)
        if num_fresh + num_prefix_free > len(self.free_queue):
            if not pages:
                del self.request_pages[request.request_id]
            return False
        for page in cached_prefix:
            if page.ref_count == 0:
                del self.free_queue[page.page_id]
            page.ref_count += 1
            pages.append(page)
        for _ in range(max(num_fresh, 0)):
            pages.append(self._take_free_page())
        self.peak_used_pages = max(self.peak_used_pages, self.num_used_pages)
        if self.enable_prefix_caching:
            self._cache_full_blocks(request, num_tokens_after)
        return True

    def _take_free_page(self) -> Page:
        _, page = self.free_queue.popitem(last=False)
        if page.block_hash is not None:  # evict the cached block it held
            if self.cached_pages.get(page.block_hash) is page:
                del self.cached_pages[page.block_hash]
            page.block_hash = None
        page.ref_count = 1
        return page

    def _cache_full_blocks(self, request: Request, num_tokens: int) -> None:
        """Publish the request's full blocks among its first `num_tokens` tokens (known tokens whose KV
        is computed by the end of this step; a reader in the same step reads them after they are
        written, since every layer writes KV before it attends)."""
        num_full = min(num_tokens, request.num_tokens) // self.block_size
        start = self.num_hashed_blocks.get(request.request_id, 0)
        if num_full <= start:
            return
        self._extend_block_hashes(request, num_full * self.block_size)
        pages = self.request_pages[request.request_id]
        for block in range(start, num_full):
            page, block_hash = pages[block], request.block_hashes[block]
            if page.block_hash is None and block_hash not in self.cached_pages:
                page.block_hash = block_hash
                self.cached_pages[block_hash] = page
        self.num_hashed_blocks[request.request_id] = num_full

    def free(self, request_id: str) -> None:
        """Release every page the request holds. Cached blocks stay findable until evicted; the last
        block of a sequence is evicted before its first (shared prefixes live longest)."""
        self.num_hashed_blocks.pop(request_id, None)
        self._release(reversed(self.request_pages.pop(request_id, [])))
        for pages in self.embedding_pages.pop(request_id, {}).values():
            self._release(pages)

    def _release(self, pages) -> None:
        for page in pages:
            page.ref_count -= 1
            if page.ref_count == 0:
                self.free_queue[page.page_id] = page
                if page.block_hash is None:  # worthless: reuse before any cached page
                    self.free_queue.move_to_end(page.page_id, last=False)

    # ----- embedding pages (encoder cache) ---------------------------------------------------------
    def take_embedding(
        self, request_id: str, item_index: int, content_hash: bytes, num_pages: int, allow_fresh: bool = True
    ) -> tuple[list[int], bool] | None:
        """Pages for one media item of a request: (page ids, True) when its encoding is cached, (page ids,
        False) for fresh pages to encode into, None when the pool is short or fresh pages are not allowed
        (nothing taken)."""
        self.encoder_cache_queries += 1
        keys = [embedding_key(content_hash, i) for i in range(num_pages)]
        cached = [self.cached_pages.get(key) for key in keys]
        held = self.embedding_pages.setdefault(request_id, {})
        if all(page is not None for page in cached):
            self.encoder_cache_hits += 1
            for page in cached:
                if page.ref_count == 0:
                    del self.free_queue[page.page_id]
                page.ref_count += 1
            held[item_index] = cached
            return [p.page_id for p in cached], True
        if not allow_fresh or num_pages > len(self.free_queue):
            return None
        held[item_index] = [self._take_free_page() for _ in range(num_pages)]
        self.peak_used_pages = max(self.peak_used_pages, self.num_used_pages)
        return [p.page_id for p in held[item_index]], False

    def publish_embedding(self, request_id: str, item_index: int, content_hash: bytes) -> None:
        """The item's encoding is committed to this step (in-process encoder) or reported done (encoder
        workers): make its pages findable by content hash."""
        self.publish_pages(self.embedding_pages[request_id][item_index], content_hash)

    def publish_pages(self, pages: list[Page], content_hash: bytes) -> None:
        """Make embedding pages findable by content hash (a key already published keeps its pages)."""
        for index, page in enumerate(pages):
            key = embedding_key(content_hash, index)
            if page.block_hash is None and key not in self.cached_pages:
                page.block_hash = key
                self.cached_pages[key] = page

    def release_embedding(self, request_id: str, item_index: int) -> None:
        self._release(self.embedding_pages.get(request_id, {}).pop(item_index, []))

    def detach_embedding(self, request_id: str, item_index: int) -> list[Page]:
        """Take an item's pages away from the request without releasing them (an encoder worker still
        writes into them); hand them to `release_pages` once it has reported."""
        return self.embedding_pages.get(request_id, {}).pop(item_index, [])

    def release_pages(self, pages: list[Page]) -> None:
        self._release(pages)

    def held_embeddings(self, request_id: str) -> dict[int, list[Page]]:
        return self.embedding_pages.get(request_id, {})
