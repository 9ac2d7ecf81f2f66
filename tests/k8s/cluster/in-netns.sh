#!/bin/bash
# Run a command in the cluster's network namespace (NETNS mode of up.sh) with KUBECONFIG and the k8s bin dir set.
D=${K8S_DIR:-/var/tmp/lap-k8s}; N=$(cat $D/netns 2>/dev/null)
export KUBECONFIG=$D/state/kubeconfig PATH=$(cat $D/bindir):$PATH
if [ -n "$N" ]; then exec nsenter --net=/run/netns/$N "$@"; else exec "$@"; fi
