"""The upper bound of a prefix scan (runtime/store.py prefix_end)."""

from __future__ import annotations

import pytest

from agentstream.runtime.store import prefix_end


@pytest.mark.parametrize(("prefix", "end"), [
    (b"s/run-1/", b"s/run-10"),
    (b"a", b"b"),
    (b"a\xff", b"b"),
    (b"a\xfe", b"a\xff"),
    (b"ab\xff\xff", b"ac"),
    (b"\xff\xff", None),
    (b"", None),
])
def test_the_end_of_a_prefix_is_the_least_key_above_all_its_keys(prefix: bytes, end: bytes | None) -> None:
    assert prefix_end(prefix) == end
    if end is not None:
        for key in (prefix, prefix + b"\x00", prefix + b"\xff" * 4):
            assert key < end
