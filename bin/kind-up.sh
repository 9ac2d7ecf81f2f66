#!/usr/bin/env bash
# A local Kubernetes for LAP's Kubernetes backend: a kind cluster with the agent-sandbox controller,
# the sandbox image of every harness and the platform image loaded into it. Safe to run again:
# the cluster is made only when missing, the manifests are applied, the images rebuilt (Docker's
# cache makes that quick) and loaded.
#
# Environment (defaults in brackets):
#   KIND_CLUSTER [agent-sbx]          the cluster's name
#   AGENT_SANDBOX_VERSION [v0.5.6]    the agent-sandbox release whose manifest is installed
#   LAP_HARNESSES [opencode claude-code codex]   the sandbox images to build
#   LAP_IMAGE_TAG [dev]               tag of every image built (lap:TAG, lap-sandbox-HARNESS:TAG)
#   LAP_KUBECONFIG [~/.kube/lap-kind-internal.yaml]   where the kubeconfig for docker-compose.yml goes
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER:-agent-sbx}
AGENT_SANDBOX_VERSION=${AGENT_SANDBOX_VERSION:-v0.5.6}
HARNESSES=${LAP_HARNESSES:-opencode claude-code codex}
TAG=${LAP_IMAGE_TAG:-dev}
KUBECONFIG_OUT=${LAP_KUBECONFIG:-$HOME/.kube/lap-kind-internal.yaml}
CONTEXT=kind-$CLUSTER
MANIFEST=https://github.com/kubernetes-sigs/agent-sandbox/releases/download/$AGENT_SANDBOX_VERSION/sandbox-with-extensions.yaml

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'kind-up: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is not installed; $2"; }

need docker "install Docker Engine: https://docs.docker.com/engine/install/"
need kind "install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "install kubectl: https://kubernetes.io/docs/tasks/tools/"
docker info >/dev/null 2>&1 || die "docker is installed but its daemon does not answer (is it running, and may $(id -un) use it?)"

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  say "kind cluster $CLUSTER exists"
else
  say "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --wait 180s
fi
kubectl config get-contexts "$CONTEXT" >/dev/null 2>&1 || kind export kubeconfig --name "$CLUSTER"
k() { kubectl --context "$CONTEXT" "$@"; }

say "installing agent-sandbox $AGENT_SANDBOX_VERSION (controller and extensions)"
# Server-side: the Sandbox and SandboxTemplate CRDs (~400 KB each) are too big for the
# last-applied-configuration annotation (256 KB) that a client-side apply writes.
k apply --server-side --force-conflicts -f "$MANIFEST"
k wait --for condition=established --timeout=60s \
  crd/sandboxes.agents.x-k8s.io crd/sandboxclaims.extensions.agents.x-k8s.io \
  crd/sandboxtemplates.extensions.agents.x-k8s.io crd/sandboxwarmpools.extensions.agents.x-k8s.io
say "waiting for the agent-sandbox controller"
k -n agent-sandbox-system rollout status deployment/agent-sandbox-controller --timeout=300s

for harness in $HARNESSES; do
  image=lap-sandbox-$harness:$TAG
  say "building $image"
  docker build -f deploy/sandbox.Dockerfile --build-arg HARNESS="$harness" -t "$image" .
  say "loading $image into $CLUSTER"
  kind load docker-image --name "$CLUSTER" "$image"
done

say "building lap:$TAG (the platform)"
docker build -f deploy/Dockerfile -t "lap:$TAG" .
say "loading lap:$TAG into $CLUSTER"
kind load docker-image --name "$CLUSTER" "lap:$TAG"

say "writing the kubeconfig for containers on kind's network to $KUBECONFIG_OUT"
mkdir -p "$(dirname "$KUBECONFIG_OUT")"
(umask 077 && kind get kubeconfig --internal --name "$CLUSTER" > "$KUBECONFIG_OUT")

cat <<EOF

Cluster $CLUSTER is ready (kubectl context $CONTEXT). Next, one of:

  * the platform in the cluster (Helm 3 or 4; a PostgreSQL it can reach, e.g. a Bitnami chart):
      helm upgrade --install lap deploy/helm/lap --kube-context $CONTEXT -n lap --create-namespace \\
        --set image.tag=$TAG --set sandbox.image='lap-sandbox-{harness}:$TAG' \\
        --set secrets.DATABASE_URL=postgresql://... --set secrets.MASTER_KEY=... \\
        --set secrets.LITELLM_API_BASE=http://... --set secrets.LITELLM_API_KEY=...
      kubectl --context $CONTEXT -n lap port-forward svc/lap 3000:3000

  * the platform beside the cluster, in Docker Compose (PostgreSQL included):
      write MASTER_KEY, LITELLM_API_BASE and LITELLM_API_KEY to .env, then
      LAP_IMAGE_TAG=$TAG docker compose up -d

Then: curl localhost:3000/readyz. kind's own network plugin (kindnet) enforces NetworkPolicy from
kind 0.24 on; with an older kind the chart's policy is accepted but not enforced.
EOF
