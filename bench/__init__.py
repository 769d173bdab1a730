"""agentid's benchmarks (``python -m bench``, ``make bench``): P1 provisioning, P2 revocation latency, P3 token
exchange, P4 footprint. Each compares against a baseline measured in the same run; see docs/benchmarks.md."""
