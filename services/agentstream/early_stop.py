"""Stop signals that arrive before the command is ready to handle them.

A process is started, and may be asked to stop (a rolling update, Ctrl-C in
`agentstream dev`), before its imports are done; with Python's default handlers a SIGTERM
then kills it (exit -15) instead of the clean exit 0 it would get a second later. The
entry points install ``catch`` first, with nothing heavy imported yet; the command's own
handler asks ``caught`` whether a stop came meanwhile.
"""

from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_caught: list[int] = []


def _remember(signum: int, frame: object) -> None:
    _caught.append(signum)


def catch() -> None:
    """Until the command installs its own handlers, remember stop signals."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _remember)


def caught() -> bool:
    return bool(_caught)


def release() -> None:
    """For a command without handlers of its own: Python's default handling again (Ctrl-C
    raises KeyboardInterrupt), and a stop that came meanwhile takes effect now."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    if _caught:
        signal.raise_signal(_caught[0])
