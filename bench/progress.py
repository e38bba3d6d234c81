"""A small progress bar on stderr: what runs now, how far along, time left.

On a terminal it redraws one line; otherwise (CI, a pipe) it prints one line
per step, so a log still says what ran.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

_WIDTH = 24


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """``total`` steps; ``step(label)`` before each, ``done()`` at the end."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = max(total, 1)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.finished = 0
        self.started = time.monotonic()
        self.label = ""

    def _eta(self) -> str:
        if self.finished == 0:
            return ""
        per_step = (time.monotonic() - self.started) / self.finished
        return f", ~{_duration(per_step * (self.total - self.finished))} left"

    def _line(self) -> str:
        filled = _WIDTH * self.finished // self.total
        bar = "#" * filled + "-" * (_WIDTH - filled)
        width = len(str(self.total))
        return f"[{bar}] {self.finished:>{width}}/{self.total}{self._eta()}  {self.label}"

    def _draw(self) -> None:
        if self.tty:
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\r\x1b[K" + self._line()[:width])
            self.stream.flush()

    def step(self, label: str) -> None:
        """Say what runs next (the previous step counts as finished)."""
        if self.label:
            self.finished += 1
        self.label = label
        if not self.enabled:
            return
        if self.tty:
            self._draw()
        else:
            width = len(str(self.total))
            self.stream.write(f"[{self.finished + 1:>{width}}/{self.total}] {label}\n")
            self.stream.flush()

    def advance(self, steps: int = 1) -> None:
        """Count ``steps`` more as finished without naming a new one."""
        self.finished = min(self.total, self.finished + steps)
        self._draw()

    def note(self, text: str) -> None:
        """Print a line of text without breaking the bar."""
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\x1b[K" + text + "\n")
            self._draw()
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        """Finish the bar (all steps counted) and leave the line."""
        if self.label:
            self.finished += 1
            self.label = ""
        if self.tty:
            took = _duration(time.monotonic() - self.started)
            self.stream.write(f"\r\x1b[K[{'#' * _WIDTH}] {self.finished}/{self.total} in {took}\n")
            self.stream.flush()
