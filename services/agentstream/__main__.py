"""``python -m agentstream`` is the ``agentstream`` command."""

from __future__ import annotations

import contextlib
import faulthandler
import sys

from agentstream import early_stop


def main() -> int:
    early_stop.catch()  # before the imports below: they take a while, a stop may come meanwhile
    # A crash in a C extension (librdkafka, RocksDB) prints every thread's Python stack to
    # stderr instead of only a signal number (once seen in CI: a worker ending with -11).
    with contextlib.suppress(RuntimeError, OSError, ValueError):  # stderr closed or not a file: nowhere to print
        faulthandler.enable()
    from agentstream.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
