"""The package benchmarks/reload.py serves and edits (a temporary copy of it, never this one)."""
