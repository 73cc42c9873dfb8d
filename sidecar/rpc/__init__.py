"""The RPC edge: protobuf conversion and the gRPC servicer."""
