"""The `joulebench` command: every workflow step can also be run by hand (e.g. on a GPU node).

:func:`main` parses the arguments (:mod:`~joulebench.cli.parser`), runs the command (one module
per stage: :mod:`~joulebench.cli.study`, :mod:`~joulebench.cli.models`,
:mod:`~joulebench.cli.bench`, :mod:`~joulebench.cli.serving`, :mod:`~joulebench.cli.results`)
and turns every :class:`~joulebench.core.errors.JoulebenchError` into one logged line, exit 2.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from joulebench.cli.parser import build_parser
from joulebench.core.errors import JoulebenchError

__all__ = ["build_parser", "exit_on_signals", "main"]

log = logging.getLogger("joulebench")


def exit_on_signals() -> None:
    """Turn SIGTERM/SIGINT/SIGHUP (SLURM time limit, scancel, Ctrl-C) into SystemExit.

    Python's default SIGTERM kills the process without running ``finally`` blocks; as an
    exception it unwinds them, so atomic writes remove their temp files and nothing half-written
    is left behind.
    """

    def handler(signum: int, _frame: object) -> None:
        log.error("received %s: stopping, nothing partial is kept", signal.Signals(signum).name)
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        exit_on_signals()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        args.func(args)
    except JoulebenchError as err:
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
