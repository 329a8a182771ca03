"""The garbage collector of a long-running service, set once the service has started.

CPython's cycle collector walks every tracked object of the oldest generation on a full
collection, and a full collection comes after every ~100 younger ones. In a service, that
generation is mostly what start-up built (modules, the app's routes and pydantic schemas:
some 85,000 objects in the scheduler) and never becomes garbage; a request that allocates a
lot (POST /tasks/batch validates 10,000 models) then pays for walking it again and again.
`settle()` moves what start-up built out of the collector's sight (gc.freeze) and lets more
objects be allocated between young collections: the scheduler's CPU per batched task fell by
a fifth (docs/PERFORMANCE.md). Cycles are still collected; start-up's objects are never freed.
"""

from __future__ import annotations

import gc

# Allocations between two collections of the youngest generation (CPython's default is 700).
YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Call once start-up is done, before serving."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
