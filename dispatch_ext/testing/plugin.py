"""pytest plugin: fixtures for extension authors (see dispatch_ext.testing)."""
