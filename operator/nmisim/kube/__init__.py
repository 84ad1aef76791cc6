"""Kubernetes plumbing shared by the operator and the node agent: a connection, one backoff, informers."""
