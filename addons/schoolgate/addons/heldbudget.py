"""How many held body bytes the proxy keeps in memory at once, in all and per device.

Each held body has its own cap (`heldbody`), but a few devices each holding a body at the cap
could push the service to its memory limit, where the kernel kills it and every pupil's traffic
stops. The budget is shared out as bytes arrive: a device may hold at most its share, and all
devices together at most the total. A body that would go over either ends in the `overload`
fail policy for its own flow only, so one device's uploads cannot push other pupils' uploads
into overload while there is room for them.
"""

from __future__ import annotations

import threading
from collections import Counter


class HeldBudget:
    """Bytes held per device and in all; `take` refuses what would go over either limit."""

    def __init__(self, total: int, per_device: int) -> None:
        if total < 1 or per_device < 1:
            raise ValueError("held byte budgets must be positive")
        self.total = total
        self.per_device = min(per_device, total)
        self._held: Counter[str] = Counter()
        self._sum = 0
        self._lock = threading.Lock()

    def take(self, device: str | None, size: int) -> bool:
        """Reserve `size` more bytes for `device` (None: from the total only); False, with
        nothing reserved, when that would go over a limit."""
        with self._lock:
            if self._sum + size > self.total:
                return False
            if device is not None:
                if self._held[device] + size > self.per_device:
                    return False
                self._held[device] += size
            self._sum += size
            return True

    def give_back(self, device: str | None, size: int) -> None:
        """Release bytes taken for `device` (None: from the total only)."""
        with self._lock:
            if device is not None:
                mine = min(size, self._held[device])
                self._held[device] -= mine
                if self._held[device] <= 0:
                    del self._held[device]
            self._sum = max(0, self._sum - size)

    @property
    def held(self) -> int:
        """Bytes held in all right now."""
        with self._lock:
            return self._sum

    def held_by(self, device: str) -> int:
        with self._lock:
            return self._held.get(device, 0)
