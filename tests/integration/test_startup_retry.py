"""A worker whose start-up requests for the cluster's topics are dropped for a moment still
starts: it asks again a second later (agentstream.unanswered). Left to librdkafka, a router
exited 1 at its start in CI ("Failed to get metadata: Local: Broker transport failure")
while its broker stalled for some seconds. On a real broker, behind
tests/integration/listing_cutter.py, which drops every such request until the worker has
given up its first try (however many times librdkafka asked it again meanwhile).

The worker is the runtime's counter (Processor._start's listings come first in it): an
``agentstream worker`` probes the broker first (broker.wait_until_answers), and that
probe, which asks until it is answered, would ride out the blip by itself.
"""

from __future__ import annotations

from pathlib import Path

from .harness import WorkerProcess, create_topics
from .listing_cutter import ListingCutter

WORKER = "tests/integration/apps/counter_worker.py"


def test_a_worker_starts_through_a_blip_that_drops_its_topic_listings(bootstrap: str, unique: str,
                                                                       tmp_path: Path) -> None:
    topic, group = f"sr-in-{unique}", f"sr-{unique}"
    create_topics(bootstrap, [topic, f"{topic}.out"], partitions=2)
    cutter = ListingCutter(bootstrap)
    cutter.cutting = True  # until the worker has given up a try: librdkafka's own tries again are cut too
    worker = WorkerProcess([WORKER, "--bootstrap", cutter.bootstrap, "--input", topic, "--output", f"{topic}.out",
                            "--group", group, "--state-dir", str(tmp_path / "state")], "counter")
    try:
        worker.wait_for_line(r"Metadata got no answer \(.*\); asking again in 1 s \(try 2 of 3\)", timeout=90)
        cutter.cutting = False  # the blip ends within the wait before the next try
        worker.wait_for_line(r"counter: assigned ", timeout=90)
    finally:
        worker.stop()
        cutter.close()
    assert cutter.misread == [] and cutter.cut >= 1, (cutter.misread, cutter.cut)
    assert worker.proc.returncode == 0, worker.tail()
