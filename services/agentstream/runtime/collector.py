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

At 20,000 young collections still ran while a burst of tasks arrived, and found nothing.
CPython starts one when the container objects allocated since the last one, less those
freed meanwhile (from any generation), pass the threshold; while loops pile up, all of the
young generation is alive. In bench.pipeline on Apache Kafka (two levels of 1,500 tasks at
once after a warm-up of 12,000; gc.callbacks, bench/RESULTS.md "Session 13") the billing
worker made 12-14 young collections of ~20 ms each during the two levels (253-297 ms, 4.1
and 5.4 % of its CPU there; 0.8-1.1 s more in the warm-up) and the router 2 (31-38 ms),
collecting no object: 95-112 us of the workers' ~3 ms per task. At 100,000 neither made
one while serving: the billing worker's ~250 loops in flight (70-120 objects each in
samples of its young generation) stay below the threshold, and their objects are freed by
reference counting as their tasks end. A worker holding more (1,000 loops: ~100,000
objects) still collects as it grows, each young collection walking up to ~100,000 live
objects (~1 us each: a pause of ~0.1 s, against ~20-50 ms at 20,000).

The price is memory: cyclic garbage waits longer. A young collection comes five times
more rarely, and so do the middle and full ones (every 10th of the one below), which free
the garbage that was still alive at a young one; what that holds depends on the app's
cycles and what they keep alive (a traceback holds its frames). In the benchmarks' runs
(scripted model, no errors) the collections that ran found 11 objects in a whole run of
15,000 tasks and the RSS stayed within 3 MB; at 100,000 none ran while serving, so garbage
made then was not counted.

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
