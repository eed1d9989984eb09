"""Tests of the lab harness (lab/), one file per module."""
