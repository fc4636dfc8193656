"""Code that more than one service needs (wire codecs, gRPC plumbing).

Every service image ships this package; no service imports another service's package.
"""
