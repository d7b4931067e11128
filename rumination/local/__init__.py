"""Local documents: an SQLite FTS5 index of a folder, searched and opened through local:// URLs."""
