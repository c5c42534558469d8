"""``python -m agentstream`` is the ``agentstream`` command."""

from __future__ import annotations

import sys

from agentstream import early_stop


def main() -> int:
    early_stop.catch()  # before the imports below: they take a while, a stop may come meanwhile
    from agentstream.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
