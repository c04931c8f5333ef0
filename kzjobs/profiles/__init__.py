"""The profiles: tiny, demo, bench and full settings as YAML data (read as package data)."""
