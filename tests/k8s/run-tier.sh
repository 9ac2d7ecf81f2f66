#!/bin/bash
# The k8s test tier, as bin/test runs it: build what the cluster needs (cached: a no-op when built),
# start the single-node cluster in its own network namespace, run the `k8s` tests inside that
# namespace (pods are reachable there by IP), and stop the cluster again, also on failure.
# Needs root and tests/k8s/cluster/install-deps.sh (once). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER=tests/k8s/cluster
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
say "k8s tier: building Kubernetes 1.20.2 and the base images (cached in ${LAP_K8S_CACHE:-/var/cache/lap-k8s})"
$CLUSTER/build-k8s.sh | tail -1
$CLUSTER/build-images.sh
say "k8s tier: starting the cluster"
trap '$CLUSTER/down.sh >/dev/null 2>&1 || true' EXIT
NETNS=lap-k8s $CLUSTER/up.sh
say "k8s tier: tests"
$CLUSTER/in-netns.sh env LAP_K8S_TIER=1 .venv/bin/pytest -m k8s "$@"
