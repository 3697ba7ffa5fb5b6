"""Endpoints: the catalog of sharing apps and their upload routes, body extraction and
multi-request upload reassembly."""
