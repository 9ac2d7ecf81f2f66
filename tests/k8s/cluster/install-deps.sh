#!/bin/bash
# Install the Debian packages the test cluster needs (build + runtime). Idempotent. Needs root.
set -euo pipefail
SRCLIST=/etc/apt/sources.list.d/lap-k8s-debsrc.sources
if [ ! -f "$SRCLIST" ]; then
  # deb-src twins of the configured deb sources (same mirror/suites/keys) so `apt-get source kubernetes` works
  sed "s/^Types: deb$/Types: deb-src/" /etc/apt/sources.list.d/debian.sources > "$SRCLIST"
  NEED_UPDATE=1
fi
[ -n "${NEED_UPDATE:-}" ] || [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*Sources*' -print -quit)" ] || NEED_UPDATE=1
[ -z "${NEED_UPDATE:-}" ] || apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  golang-go make rsync jq golang-github-modern-go-reflect2-dev \
  etcd-server etcd-client containerd runc containernetworking-plugins skopeo umoci busybox-static \
  curl openssl bc iproute2 util-linux ca-certificates python3 python3-venv >/dev/null
