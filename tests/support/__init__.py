"""Shared test helpers: polling with deadlines, cluster handles, kubectl. Imported by tests at every layer."""
