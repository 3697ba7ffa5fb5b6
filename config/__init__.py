"""Packaged as `schoolgate.defaults` so the embedded default configuration ships with the code."""
