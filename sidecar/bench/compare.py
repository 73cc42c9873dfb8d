"""One case of a bench: the sidecar's figures beside its two ceilings, as ratios.

- transport ceiling: the echo server (sidecar/bench/echo.py) under the same load;
- compute ceiling: the backend alone, in process, at the batch size the server
  formed (sidecar/bench/ceiling.py);
- for the mock backend also its analytic bound (sidecar/bench/bound.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sidecar.bench.bound import Bound
from sidecar.bench.ceiling import Ceiling
from sidecar.bench.results import Result, ratio


@dataclass
class Comparison:
    case: str
    sidecar: Result
    echo: Result | None = None
    ceiling: Ceiling | None = None
    ceiling_note: str | None = None  # why there is no compute ceiling, when there is none
    bound: Bound | None = None

    def ratios(self) -> dict[str, float | None]:
        s, e = self.sidecar, self.echo
        return {
            "throughput_vs_echo": ratio(s.achieved_rps, e.achieved_rps if e else None),
            "throughput_vs_compute_ceiling": ratio(s.achieved_rps, self.ceiling.rps if self.ceiling else None),
            "cpu_per_request_vs_echo": ratio(s.cpu_us_per_req, e.cpu_us_per_req if e else None),
            "throughput_vs_mock_bound": ratio(s.achieved_rps, self.bound.rps if self.bound else None),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "ratios": self.ratios(),
            "compute_ceiling": asdict(self.ceiling) if self.ceiling else None,
            "compute_ceiling_note": self.ceiling_note,
            "mock_bound": asdict(self.bound) if self.bound else None,
        }
