"""Standard streams that outlive their reader. ``gantune train … | head -1`` ended the run mid-training with a
BrokenPipeError traceback (exit 1, a run folder left as "stopped before its first checkpoint"); a closed stdout
(``>&-``) was an AttributeError, and a closed stderr lost the error line and turned exit 2 into 1. A command's
work is its files (run folders, studies, MLflow runs): where nobody reads its output any more it goes on without
it. A stream that fails otherwise (``> /dev/full``) still fails, naming itself."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from collections.abc import Iterator
from typing import TextIO

#: errors of a stream whose reader is gone: a closed pipe, a closed descriptor
GONE = frozenset({errno.EPIPE, errno.EBADF})


class Outliving(io.TextIOBase):
    """``stream``, whose writes are dropped once its reader is gone (``lost``)."""

    def __init__(self, stream: TextIO, name: str) -> None:
        super().__init__()
        self.stream, self.name, self.lost = stream, name, False

    def write(self, text: str) -> int:
        if not self.lost:
            with self._guarded():
                self.stream.write(text)
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            with self._guarded():
                self.stream.flush()

    def isatty(self) -> bool:
        """False for a stream closed under it too (a progress line asked at exit: "ValueError: I/O operation on
        closed file" after the tests' captured streams closed)."""
        try:
            return not self.lost and self.stream.isatty()
        except ValueError:
            return False

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.stream.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self.stream.errors

    @contextlib.contextmanager
    def _guarded(self) -> Iterator[None]:
        try:
            yield
        except OSError as err:
            self.lost = True
            with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
                # what is left in the stream's buffer goes nowhere when the interpreter flushes it at exit
                # (else: "Exception ignored ... BrokenPipeError", or the full disk's error again, on stderr)
                _null_onto(self.stream.fileno())
            if err.errno not in GONE:  # said once, as the command's error line
                err.filename = err.filename or self.name  # "stdout: No space left on device"
                raise


def _null_onto(fd: int) -> None:
    null = os.open(os.devnull, os.O_WRONLY)
    if null != fd:
        os.dup2(null, fd)
        os.close(null)


def _sink(fd: int) -> TextIO:
    """A stream for a standard one Python found closed (``>&-``: ``None``): ``/dev/null``, also put on ``fd`` while
    that is free, so that no file a command opens takes its number (and a child process's prints)."""
    try:
        os.fstat(fd)
    except OSError:
        _null_onto(fd)
    return open(os.devnull, "w")


@contextlib.contextmanager
def outliving() -> Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` as ``Outliving`` streams for the block (a closed one: ``/dev/null``)."""
    saved = sys.stdout, sys.stderr
    sys.stdout = Outliving(sys.stdout if sys.stdout is not None else _sink(1), "stdout")
    sys.stderr = Outliving(sys.stderr if sys.stderr is not None else _sink(2), "stderr")
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
