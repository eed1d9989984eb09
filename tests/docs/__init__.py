"""Tests that documents (README, course, notebooks, benchmarks statements) agree with the code and results."""
