"""Monitoring: Prometheus metrics (schoolgate_*) and the server that exposes them."""
