"""The gRPC clients of the embed server and the scraper, their channels, and the gateway's
own types for what they answer (nothing past here sees protobuf)."""
