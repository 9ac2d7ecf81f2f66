#!/usr/bin/env bash
# LAP on Amazon EKS: the cluster (made only when missing), the agent-sandbox controller, an ECR
# repository per image with the images pushed, then the Helm release. Safe to run again; a re-run
# pushes new images (tag: the git commit) and upgrades the release.
#
# Required environment (the release's configuration, kept in the Secret lap-config):
#   DATABASE_URL       a PostgreSQL the cluster reaches (Amazon RDS, say): postgresql://user:pw@host:5432/lap
#   MASTER_KEY         the admin bearer key, at least 8 characters
#   LITELLM_API_BASE   your LiteLLM gateway, as the workers reach it
#   LITELLM_API_KEY    its key; it never enters a sandbox
# Optional environment (defaults in brackets):
#   AWS_REGION [us-east-1]  EKS_CLUSTER [lap]  EKS_NODEGROUP [lap-nodes]  EKS_NODE_TYPE [m6i.xlarge]
#   EKS_NODES [2]  EKS_VERSION [eksctl's default]  LAP_NAMESPACE [lap]  LAP_IMAGE_TAG [git commit]
#   LAP_HARNESSES [opencode claude-code codex]  AGENT_SANDBOX_VERSION [v0.5.6]
#   DOCKER_PLATFORM [linux/amd64]: the nodes' platform (linux/arm64 with Graviton node types)
set -euo pipefail
cd "$(dirname "$0")/.."

REGION=${AWS_REGION:-us-east-1}
CLUSTER=${EKS_CLUSTER:-lap}
NODEGROUP=${EKS_NODEGROUP:-lap-nodes}
NODE_TYPE=${EKS_NODE_TYPE:-m6i.xlarge}
NODES=${EKS_NODES:-2}
NAMESPACE=${LAP_NAMESPACE:-lap}
HARNESSES=${LAP_HARNESSES:-opencode claude-code codex}
AGENT_SANDBOX_VERSION=${AGENT_SANDBOX_VERSION:-v0.5.6}
PLATFORM=${DOCKER_PLATFORM:-linux/amd64}
MANIFEST=https://github.com/kubernetes-sigs/agent-sandbox/releases/download/$AGENT_SANDBOX_VERSION/sandbox-with-extensions.yaml

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'eks-up: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is not installed; $2"; }

need aws "install the AWS CLI v2: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html"
need eksctl "install eksctl: https://eksctl.io/installation/"
need kubectl "install kubectl: https://kubernetes.io/docs/tasks/tools/"
need helm "install Helm 3 or 4: https://helm.sh/docs/intro/install/"
need docker "install Docker Engine (with buildx): https://docs.docker.com/engine/install/"
docker info >/dev/null 2>&1 || die "docker is installed but its daemon does not answer"
missing=()
for name in DATABASE_URL MASTER_KEY LITELLM_API_BASE LITELLM_API_KEY; do
  [ -n "${!name:-}" ] || missing+=("$name")
done
[ ${#missing[@]} -eq 0 ] || die "set ${missing[*]} first (see the top of $0)"
[ ${#MASTER_KEY} -ge 8 ] || die "MASTER_KEY must have at least 8 characters"
ACCOUNT=$(aws sts get-caller-identity --query Account --output text) \
  || die "the AWS CLI has no working credentials (aws configure, or AWS_PROFILE)"
REGISTRY=$ACCOUNT.dkr.ecr.$REGION.amazonaws.com
TAG=${LAP_IMAGE_TAG:-$(git rev-parse --short=12 HEAD 2>/dev/null || date +%Y%m%d%H%M%S)}

if eksctl get cluster --name "$CLUSTER" --region "$REGION" >/dev/null 2>&1; then
  say "EKS cluster $CLUSTER exists in $REGION"
else
  say "creating EKS cluster $CLUSTER in $REGION (15-20 minutes)"
  # The VPC CNI enforces NetworkPolicy only when asked to; the EBS CSI driver provisions the
  # sessions' volumes (PVCs). A quoted version: YAML would read 1.30 as the number 1.3.
  version_line=${EKS_VERSION:+"  version: \"$EKS_VERSION\""}
  eksctl create cluster -f - <<EOF
apiVersion: eksctl.io/v1alpha5
kind: ClusterConfig
metadata:
  name: $CLUSTER
  region: $REGION
$version_line
iam:
  withOIDC: true
addons:
  - name: vpc-cni
    configurationValues: '{"enableNetworkPolicy": "true"}'
  - name: aws-ebs-csi-driver
    wellKnownPolicies:
      ebsCSIController: true
managedNodeGroups:
  - name: $NODEGROUP
    instanceType: $NODE_TYPE
    desiredCapacity: $NODES
    minSize: 1
    maxSize: $((NODES * 2))
EOF
fi
aws eks update-kubeconfig --name "$CLUSTER" --region "$REGION" >/dev/null
CONTEXT=$(kubectl config current-context)
k() { kubectl --context "$CONTEXT" "$@"; }

if ! k get storageclass -o jsonpath='{.items[*].metadata.annotations.storageclass\.kubernetes\.io/is-default-class}' | grep -q true; then
  say "adding a default StorageClass (gp3, EBS CSI)"
  k apply -f - <<'EOF'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: gp3
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: ebs.csi.aws.com
parameters:
  type: gp3
volumeBindingMode: WaitForFirstConsumer
allowVolumeExpansion: true
EOF
fi

say "installing agent-sandbox $AGENT_SANDBOX_VERSION (controller and extensions)"
# Server-side: the biggest CRDs do not fit the annotation a client-side apply writes.
k apply --server-side --force-conflicts -f "$MANIFEST"
k wait --for condition=established --timeout=120s \
  crd/sandboxes.agents.x-k8s.io crd/sandboxclaims.extensions.agents.x-k8s.io \
  crd/sandboxtemplates.extensions.agents.x-k8s.io crd/sandboxwarmpools.extensions.agents.x-k8s.io
k -n agent-sandbox-system rollout status deployment/agent-sandbox-controller --timeout=300s

say "logging in to ECR ($REGISTRY)"
aws ecr get-login-password --region "$REGION" | docker login --username AWS --password-stdin "$REGISTRY"
ensure_repository() {
  aws ecr describe-repositories --region "$REGION" --repository-names "$1" >/dev/null 2>&1 \
    || aws ecr create-repository --region "$REGION" --repository-name "$1" \
      --image-scanning-configuration scanOnPush=true >/dev/null
}
push() {  # push IMAGE-NAME DOCKER-BUILD-ARGS...
  local name=$1; shift
  ensure_repository "$name"
  say "building and pushing $REGISTRY/$name:$TAG"
  docker build --platform "$PLATFORM" -t "$REGISTRY/$name:$TAG" "$@" .
  docker push "$REGISTRY/$name:$TAG"
}
for harness in $HARNESSES; do
  push "lap-sandbox-$harness" -f deploy/sandbox.Dockerfile --build-arg HARNESS="$harness"
done
push lap -f deploy/Dockerfile

say "writing the configuration Secret lap-config in namespace $NAMESPACE"
k create namespace "$NAMESPACE" --dry-run=client -o yaml | k apply -f -
k -n "$NAMESPACE" create secret generic lap-config \
  --from-literal=DATABASE_URL="$DATABASE_URL" --from-literal=MASTER_KEY="$MASTER_KEY" \
  --from-literal=LITELLM_API_BASE="$LITELLM_API_BASE" --from-literal=LITELLM_API_KEY="$LITELLM_API_KEY" \
  --dry-run=client -o yaml | k apply -f -

say "installing the Helm release lap"
helm upgrade --install lap deploy/helm/lap --kube-context "$CONTEXT" --namespace "$NAMESPACE" \
  --set existingSecret=lap-config \
  --set image.repository="$REGISTRY/lap" --set image.tag="$TAG" \
  --set sandbox.image="$REGISTRY/lap-sandbox-{harness}:$TAG" \
  --wait --timeout 10m

cat <<EOF

LAP runs on EKS cluster $CLUSTER ($REGION), namespace $NAMESPACE, images tagged $TAG.
  kubectl -n $NAMESPACE port-forward svc/lap 3000:3000 && curl localhost:3000/readyz
To serve it publicly, put an Ingress or a LoadBalancer (--set web.service.type=LoadBalancer) in front.
EOF
