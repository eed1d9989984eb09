"""Tests of core/bhra.py, by subject."""
