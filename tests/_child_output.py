"""Reading a child process's stdout line by line with deadlines (shared by the crash tests)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time


class ChildOutput:
    """Complete stdout lines of a child, read with a deadline (never blocks forever)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self._fd = proc.stdout.fileno()
        self._partial = b""
        self.lines: list[bytes] = []
        self.eof = False

    def read_until(self, count: int, deadline: float) -> None:
        while len(self.lines) < count and not self.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"child printed {len(self.lines)} lines, waited for {count}")
            ready, _, _ = select.select([self._fd], [], [], remaining)
            if ready:
                self._feed(os.read(self._fd, 1 << 16))

    def drain(self, deadline: float) -> None:
        self.read_until(sys.maxsize, deadline)

    def _feed(self, data: bytes) -> None:
        if not data:
            self.eof = True
            return
        *complete, self._partial = (self._partial + data).split(b"\n")
        self.lines.extend(complete)
