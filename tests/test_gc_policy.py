"""The engine process's GC policy (omniserve/core/gc_policy.py): frozen objects are out of the
collector's reach until unfrozen, and what is allocated afterwards is collected as usual."""

from __future__ import annotations

import gc
import weakref

from omniserve.core.gc_policy import freeze_startup_heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref:
    """A two-node reference cycle with no outside reference; a weak reference to one node."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_frozen_cycles_wait_for_unfreeze_and_new_ones_are_collected() -> None:
    startup = [Node() for _ in range(3)]
    for first, second in zip(startup, startup[1:] + startup[:1], strict=True):
        first.other = second
    held = weakref.ref(startup[0])
    try:
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count() > 0
        del startup, first, second  # a cycle that was alive at the freeze, now garbage
        late = cycle()  # allocated after the freeze
        gc.collect()
        assert late() is None  # the collector still frees what came after
        assert held() is not None  # but not what was frozen
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert held() is None  # unfrozen: collected as usual
