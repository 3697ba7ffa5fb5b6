"""The decision pipeline: inspect media (engine), decide by group policy, record (audit)."""
