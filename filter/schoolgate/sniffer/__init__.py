"""The passive sniffer: DNS, TLS and QUIC server names and circumvention signatures per device.
It never blocks; it imports nothing of the decision pipeline."""
