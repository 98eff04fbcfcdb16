"""Helpers shared by integration and end-to-end tests (no test cases live here)."""
