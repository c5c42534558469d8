"""Which partitions a Processor's assignment hooks are handed (runtime/processor.py
``_assigned``). A callback may name only some inputs of a partition (the KIP-848 client
assigns a topic once it knows its metadata): the hooks get a partition once all of its
inputs are assigned (they spawn work on its input topic), and once only while it stays
(the specialist's hook resumes every in-flight run of the partition, the router's sends
its open tasks again). No I/O: there are no tables to restore."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from agentstream.runtime import MessageContext
from agentstream.runtime.processor import Processor

TASKS, RESULTS = "tasks", "results"


def _processor(handed: list[list[int]]) -> Processor:
    processor = Processor("assign", "localhost:9", "assign", "unused-state-dir")
    processor._reader = SimpleNamespace()  # type: ignore[assignment]  # no table: nothing is read
    processor._restore = lambda targets: []  # type: ignore[method-assign]

    async def on_input(value: bytes, ctx: MessageContext) -> None:
        pass

    processor.handler(TASKS)(on_input)
    processor.handler(RESULTS)(on_input)

    async def hook(partitions: list[int]) -> None:
        handed.append(partitions)

    processor.on_assign(hook)
    return processor


def _run(processor: Processor, *steps: tuple[str, list[tuple[str, int]]]) -> None:
    async def run() -> None:
        for callback, tps in steps:
            if callback == "assign":
                await processor._assigned(tps)
            else:
                await processor._revoked(tps, lost=callback == "lose")

    asyncio.run(run())


def test_a_partition_goes_to_the_hooks_once_every_input_of_it_is_assigned() -> None:
    handed: list[list[int]] = []
    processor = _processor(handed)
    _run(processor, ("assign", [(TASKS, 0), (TASKS, 1)]))
    assert handed == [], "the hooks spawn work on the input topic: not before every input of the partition is here"
    _run(processor, ("assign", [(RESULTS, 0), (RESULTS, 1), (RESULTS, 2)]))
    assert handed == [[0, 1]]
    _run(processor, ("assign", [(TASKS, 2)]))
    assert handed == [[0, 1], [2]]
    assert processor.assigned_partitions() == {0, 1, 2}


def test_an_input_assigned_again_to_a_partition_the_hooks_had_runs_no_hook_again() -> None:
    handed: list[list[int]] = []
    processor = _processor(handed)
    _run(processor, ("assign", [(TASKS, 0), (RESULTS, 0)]), ("revoke", [(RESULTS, 0)]), ("assign", [(RESULTS, 0)]))
    assert handed == [[0]], "a second run of the hooks would resume the partition's in-flight runs twice"


def test_a_partition_given_back_after_its_revoke_or_loss_runs_the_hooks_again() -> None:
    handed: list[list[int]] = []
    processor = _processor(handed)
    both = [(TASKS, 0), (RESULTS, 0)]
    _run(processor, ("assign", both), ("revoke", both), ("assign", both), ("lose", both), ("assign", both))
    assert handed == [[0], [0], [0]]
