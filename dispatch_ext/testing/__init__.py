"""Testing kit for extension authors."""
