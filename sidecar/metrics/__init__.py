"""Metrics shaped like Apache Flink's (org.apache.flink.metrics).

Counters, gauges, histograms and meters hang off a tree of `MetricGroup`s rooted
at `root_group(registry, host, tm_id)` (scope `<host>.taskmanager.<tm_id>`). The
`MetricRegistry` tells its reporters (Prometheus, log, in-memory) about every
metric added or removed, drives the scheduled ones, and answers `snapshot()`.
The names on a Flink dashboard and on ours are therefore the same.
"""
