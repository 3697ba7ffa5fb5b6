"""The DSL's console: incidents without imagery, acknowledged, recorded, closed and exported."""
