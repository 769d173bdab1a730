"""A local Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager) run as child processes.

Used by ``agentid dev up``, ``make demo`` and the test suite; never by the operator itself.
"""
