"""Tiny apps and helpers for the supervisor integration tests."""
