"""Example applications built on dispatch-ext (run them from the repository root)."""
