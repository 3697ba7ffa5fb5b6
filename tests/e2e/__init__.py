"""Process-level suites: real `schoolgate run` processes, real clients, namespaces, systemd."""
