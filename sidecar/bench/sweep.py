"""`--sweep KEY=V1,V2,...`: one case per value, the rest of the load unchanged.

    in-flight=1,8,64,256   closed loop, that many outstanding in total
    rate=1000,5000         open loop, that many req/s offered in total
"""

from __future__ import annotations

import math

KEYS = ("in-flight", "rate")


def parse_sweep(text: str) -> tuple[str, list[float]]:
    """(key, values); ValueError naming what is wrong."""
    key, sep, values_text = text.partition("=")
    key = key.strip()
    if not sep or key not in KEYS:
        raise ValueError(f"--sweep {text!r}: expected KEY=V1,V2,... with KEY one of {', '.join(KEYS)}")
    values: list[float] = []
    for item in values_text.split(","):
        item = item.strip()
        try:
            value = float(item) if key == "rate" else int(item)
        except ValueError:
            kind = "a number" if key == "rate" else "a whole number"
            raise ValueError(f"--sweep {text!r}: {item!r} is not {kind}") from None
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"--sweep {text!r}: {item!r} must be positive")
        values.append(value)
    if len(set(values)) != len(values):
        raise ValueError(f"--sweep {text!r}: a value is repeated")
    return key, values
