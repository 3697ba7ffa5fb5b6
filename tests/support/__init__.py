"""Helpers the test suites share: benign imagery, fixtures, harnesses, namespaces."""
