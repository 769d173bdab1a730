"""Kopf registrations only: each handler unpacks Kopf's arguments and awaits one function."""
