"""Exponential backoff that cannot overflow, shared by every retry and reconnect policy.

`min(cap, initial * multiplier ** n)` written naively raises OverflowError once
`multiplier ** n` passes the largest float (n of about 1,025 for a multiplier of
2): a policy that never gives up would die there. Past the attempt where the
product first reaches the cap, the answer is the cap, so it is never computed.
"""

from __future__ import annotations

import math


def capped_exponential(initial: float, multiplier: float, n: int, cap: float) -> float:
    """min(cap, initial * multiplier ** n), for any n >= 0 (multiplier >= 1, initial > 0)."""
    if initial >= cap:
        return cap
    if n <= 0 or multiplier <= 1:
        return initial
    if n > math.log(cap / initial) / math.log(multiplier):
        return cap
    return min(cap, initial * multiplier**n)
