"""``python -m agentstream`` is the ``agentstream`` command."""

from __future__ import annotations

import sys

from agentstream.cli import main

if __name__ == "__main__":
    sys.exit(main())
