"""The cyclic garbage collector's settings for a long-running worker.

CPython collects its youngest generation every 700 net allocations of container objects
by default. A worker holding hundreds of agent loops in flight allocates that many in well
under a millisecond (coroutines, futures, handles, decoded records), and each young
collection promotes whatever is still in flight to the older generations, whose
collections then walk every live loop again: in bench.pipeline (1,500 tasks at once, Tansu)
the billing worker spent about 11 % of its CPU in the collector (1,318 young, 120 middle
and 10 full collections; measured with gc.callbacks). With the youngest threshold at
20,000 most of a task's objects are freed by reference counting before any collection sees
them; the same run made 33 young and 1 middle collection, 0.26 s instead of 0.97 s.

At 20,000 young collections still ran while a burst of tasks arrived, and found nothing:
a collection is triggered by a net growth of the youngest generation, and while loops pile
up everything in it is alive. In bench.pipeline on Apache Kafka (two levels of 1,500 tasks
at once after a warm-up of 12,000; gc.callbacks, bench/RESULTS.md "Session 13") the billing
worker made 12-14 young collections of ~20 ms each during the two levels (253-297 ms, 4-5 %
of its CPU there; 0.8-1.1 s more in the warm-up) and the router 2 (31-38 ms), collecting no
object: 95-112 us of the workers' ~3 ms per task. At 100,000 neither made one while
serving: the billing worker's ~250 loops in flight (70-120 objects each in samples of its
young generation) stay below the threshold, and their objects are freed by reference
counting as their tasks end (the count goes down as objects are freed). A worker holding
more (1,000 loops: ~100,000 objects) still collects as it grows, each young collection
walking up to ~100,000 live objects (~1 us each: a pause of ~0.1 s). The price is memory:
cyclic garbage, which only a collection frees, may grow to ~100,000 container objects (some
10-20 MB at 100-200 bytes each) before one runs; these workers made 11 such objects in a
whole run (15,000 tasks).

What was built before serving (modules, the topology, schemas, compiled tools) lives as
long as the process: gc.freeze() moves it out of the generations, so that no collection
walks it again. Cyclic garbage is still collected, only less often.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 100_000  # CPython's default is 700; 20,000 until session 13
OLDER_THRESHOLDS = (10, 10)  # CPython's defaults


def tune_for_serving() -> None:
    """Call once the worker is built, before it starts serving."""
    gc.collect()  # the start-up's garbage goes now, not into the frozen set
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
