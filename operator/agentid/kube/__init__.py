"""Kubernetes I/O adapters: the only code that talks to the API server (kubernetes.aio underneath)."""
