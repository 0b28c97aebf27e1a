"""Peak host memory of a block of work: RSS sampled in a thread (device memory is each backend's `device_report`)."""

from __future__ import annotations

import threading
import time


class PeakRSS:
    """Context manager sampling this process's RSS every `interval` s; `.peak_mb` after exit.

    ru_maxrss is a lifetime peak, useless for one row of a benchmark; sampling gives the
    peak of the block itself.
    """

    def __init__(self, interval: float = 0.005):
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak_bytes = 0
        self.start_bytes = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._proc.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> PeakRSS:
        self.start_bytes = self.peak_bytes = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._proc.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20
