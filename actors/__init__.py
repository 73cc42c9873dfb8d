"""The imperative shell: one Pykka actor per file, messages in messages.py.

Actors feed events to the core (sidecar/core), carry out the actions it returns,
and talk to each other only with `tell`. They hold no decision logic of their own.
"""
