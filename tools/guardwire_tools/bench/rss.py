"""Peak resident memory and CPU time of a process (Linux ``/proc``; None elsewhere)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

__all__ = ["RssSampler", "cpu_seconds", "rss_mb"]


def rss_mb(pid: int | None = None, field: str = "VmRSS") -> float | None:
    """``VmRSS`` (now) or ``VmHWM`` (peak so far) of ``pid`` in MiB."""
    path = Path(f"/proc/{pid or os.getpid()}/status")
    try:
        for line in path.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_seconds(pid: int | None = None) -> float | None:
    """User + system CPU seconds consumed so far by ``pid`` (all its threads)."""
    try:
        stat = Path(f"/proc/{pid or os.getpid()}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class RssSampler:
    """Samples a process's RSS in a thread; ``peak()`` since the last ``reset()``."""

    def __init__(self, pid: int | None = None, interval_s: float = 0.02) -> None:
        self.pid = pid or os.getpid()
        self.interval_s = interval_s
        self._peak: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        value = rss_mb(self.pid)
        if value is None:
            return
        with self._lock:
            self._peak = value if self._peak is None else max(self._peak, value)

    def reset(self) -> None:
        with self._lock:
            self._peak = None
        self.sample()

    def peak(self) -> float | None:
        self.sample()
        with self._lock:
            return self._peak
