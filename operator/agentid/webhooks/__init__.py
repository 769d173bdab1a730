"""Admission: validating (and attributing) AgentIdentity writes, with the same parser as the reconciler."""
