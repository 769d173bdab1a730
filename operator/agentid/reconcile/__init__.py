"""One level-triggered reconciliation pass for an agent: gather, plan, apply, observe, write status."""
