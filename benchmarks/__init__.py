"""`make bench`: every figure printed as a table and written as JSON."""
