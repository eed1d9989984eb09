"""The test suite: tests/core (core/bhra.py), tests/lab (the harness, one file per module), tests/docs (documents)."""
