"""The ``agentid`` command (also installed as the kubectl plugin ``kubectl-agentid``)."""
