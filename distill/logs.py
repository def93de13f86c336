"""One output channel for the whole library.

Every module logs through `log = logging.getLogger(__name__)` (so every record is under the `distill`
logger) and never prints progress to stderr itself; records reach stderr through one root handler. Entry points
(`distill.jobs`, the `distill` CLI) call `setup_logging()` once; Ray workers get the same format through
`worker_setup_hook`, passed as `runtime_env["worker_process_setup_hook"]`, so progress logged inside Ray Data /
Ray Train workers is visible in the job's output too.

The level comes from `DISTILL_LOG_LEVEL` (default INFO).
"""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATEFMT = "%H:%M:%S"
_MARK = "_distill_handler"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted (a redirected stream, pytest's capture),
    not to the stream that happened to be there when logging was set up."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(level: str | int | None = None) -> logging.Logger:
    """One stderr handler with the project's format on the root logger, `distill` records at INFO.

    The handler sits on the root logger, so a library's later `logging.basicConfig()` is a no-op and its
    warnings share the format; a plain stderr handler some library installed earlier is replaced, or
    every record would print twice. Third-party loggers keep the root's WARNING level. Idempotent."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler.stream in (sys.stderr, sys.__stderr__):
            root.removeHandler(handler)  # a library's basicConfig(): ours replaces it
    if not any(getattr(h, _MARK, False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
        setattr(handler, _MARK, True)
        root.addHandler(handler)
    logger = logging.getLogger("distill")
    logger.setLevel(level or os.environ.get("DISTILL_LOG_LEVEL", "INFO"))
    return logger


def worker_setup_hook() -> None:
    """Ray `worker_process_setup_hook`: the same handler and format in every Ray worker process."""
    setup_logging()
