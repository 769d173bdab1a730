"""The CRD contract: pydantic models of agentid.dev resources and the CRD generator."""
