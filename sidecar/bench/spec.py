"""What one bench run offers, in total, and the part of it each load process runs."""

from __future__ import annotations

from dataclasses import dataclass, replace

PACKED = 64  # requests per stream message when packed: SidecarClient's default
UNPACKED = 1  # one request per message, as a plain gRPC client sends them


@dataclass(frozen=True, slots=True)
class Load:
    """A closed loop (`in_flight` outstanding) or an open loop (`rate` req/s offered),
    in total over `procs` processes and `streams` streams."""

    in_flight: int | None = 64
    rate: float | None = None
    streams: int = 1
    procs: int = 1
    packed: bool = True
    seconds: float | None = 5.0  # the measured interval; or, with `count`, until that many are measured
    count: int | None = None
    warmup_s: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.in_flight is None) == (self.rate is None):
            raise ValueError("give either an in-flight count (closed loop) or a rate (open loop)")
        if (self.seconds is None) == (self.count is None):
            raise ValueError("give either --seconds or --count")
        if self.procs < 1 or self.streams < 1:
            raise ValueError("--procs and --streams must be at least 1")
        if self.streams < self.procs:
            raise ValueError(f"--streams ({self.streams}) must be at least --procs ({self.procs}): each process runs its own")
        if self.in_flight is not None and self.in_flight < self.streams:
            raise ValueError(f"--in-flight ({self.in_flight}) must be at least --streams ({self.streams})")
        if self.rate is not None and not self.rate > 0:
            raise ValueError("--rate must be positive")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError("--seconds must be positive")
        if self.count is not None and self.count < 1:
            raise ValueError("--count must be at least 1")
        if self.warmup_s < 0:
            raise ValueError("--warmup must not be negative")

    @property
    def mode(self) -> str:
        return "closed" if self.in_flight is not None else "open"

    @property
    def max_pack(self) -> int:
        return PACKED if self.packed else UNPACKED

    def label(self) -> str:
        shape = f"in-flight={self.in_flight}" if self.in_flight is not None else f"rate={self.rate:g}"
        return f"{shape} {'packed' if self.packed else 'unpacked'}"

    def with_value(self, key: str, value: float) -> Load:
        """This load with one sweep value set: `in-flight` (closed loop) or `rate` (open)."""
        if key == "in-flight":
            return replace(self, in_flight=int(value), rate=None)
        return replace(self, rate=float(value), in_flight=None)

    def shares(self, address: str, inputs: tuple[InputSpec, ...]) -> list[Share]:
        """The part of this load each process runs: its streams, and their in-flight
        counts (closed loop) or its rate (open loop: rate / procs)."""
        per_proc = split(self.streams, self.procs)
        in_flight = split(self.in_flight, self.streams) if self.in_flight is not None else [0] * self.streams
        out, first = [], 0
        for proc, n in enumerate(per_proc):
            mine = tuple(in_flight[first:first + n])
            first += n
            rate = self.rate / self.procs if self.rate is not None else None
            out.append(Share(address, proc, mine, rate, self.max_pack, self.seed, inputs))
        return out


@dataclass(frozen=True, slots=True)
class InputSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Share:
    """What one load process runs: one SidecarClient per entry of `in_flight`."""

    address: str
    proc: int
    in_flight: tuple[int, ...]  # per stream; zeros in an open loop
    rate: float | None  # this process's arrivals per second (open loop)
    max_pack: int
    seed: int
    inputs: tuple[InputSpec, ...]


def split(total: int, parts: int) -> list[int]:
    """`total` spread over `parts` as evenly as whole numbers allow, larger parts first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]

