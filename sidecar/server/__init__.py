"""The server: actor wiring, the event-loop side of streams, and the gRPC service."""
