"""Bridges that run dispatch-ext extensions inside other job engines."""
