"""Tests against a real Kubernetes test cluster (tests/k8s/cluster), with a stand-in agent-sandbox controller."""
