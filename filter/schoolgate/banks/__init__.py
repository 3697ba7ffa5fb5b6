"""Banks: named hash lists with provenance in SQLite, and their import/export formats."""
