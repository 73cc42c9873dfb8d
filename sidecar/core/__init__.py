"""The functional core: pure state machines and data logic.

Nothing here reads a clock, starts a thread or touches the network: time comes in
as a `now: float` argument (seconds on a monotonic scale) and effects go out as
return values. The actors in `actors/` are the imperative shell around it.
"""
