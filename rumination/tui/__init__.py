"""The Textual research TUI (extra `tui`)."""
