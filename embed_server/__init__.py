"""The embedding server: five vision models behind one gRPC API, with dynamic batching."""
