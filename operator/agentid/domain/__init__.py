"""Pure decisions about agents (no I/O): names, desired objects, supervision, keys, plans, conditions."""
