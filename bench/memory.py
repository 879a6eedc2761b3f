"""Peak-memory measurement shared by the benchmarks (``from memory import PeakMemory``)."""

from __future__ import annotations

import os
import threading
import time

import torch


class PeakMemory:
    """Peak memory growth during a block: CUDA allocator peak, or sampled CPU RSS growth (MiB)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mib = 0.0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._base = self._rss()
            self._peak = self._base
            self._stop = threading.Event()

            def sample():
                while not self._stop.is_set():
                    self._peak = max(self._peak, self._rss())
                    time.sleep(0.002)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_mib = (torch.cuda.max_memory_allocated() - self._base) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._rss())
            self.peak_mib = (self._peak - self._base) / 2**20
