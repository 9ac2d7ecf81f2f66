#!/bin/bash
# Build kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kubectl v1.20.2 from Debian
# bookworm's "kubernetes" source package with Debian's Go 1.19, applying patches 1-3 from
# shared/k8s-testcluster/real-kubelet.md plus patch 4 (kubelet start 5 s faster without Docker). Result is cached in $CACHE/bin-<srcversion>-<patchhash>/ and the
# script is a no-op (prints the dir) when that exists. Prints the bin dir as the last line of stdout.
# Usage: build-k8s.sh [--cached-only]   (env: LAP_K8S_CACHE=/var/cache/lap-k8s, KEEP_SRC=1 to keep the 2.7 GB tree)
set -euo pipefail
CACHE=${LAP_K8S_CACHE:-/var/cache/lap-k8s}
BINS="kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl"

apply_patches() {
  # Patch 1: vendored reflect2 v1.0.1 faults with Go >= 1.18 (apiserver dies on first CR write). Use Debian's v1.0.2.
  local R=vendor/github.com/modern-go/reflect2
  rm -rf "$R" && mkdir -p "$R"
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$R"/
  # Patch 2: with Go 1.19 the OpenAPI type validator treats "" / 0 as null -> reduce the check to data == nil.
  local f
  for f in vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go vendor/github.com/go-openapi/validate/type.go; do
    sed -i 's/if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {/if data == nil {/' "$f"
    grep -q 'if data == nil {$' "$f"
  done
  # Patch 3: KUBELET_KERNEL_TUNABLES_WARN_ONLY=1 makes the kubelet only warn instead of writing 6 host sysctls.
  python3 - <<'PY'
p='pkg/kubelet/cm/container_manager_linux.go'
s=open(p).read()
old="""	if cm.GetNodeConfig().ProtectKernelDefaults {
		b = KernelTunableError
	}
"""
new=old+"""	if os.Getenv("KUBELET_KERNEL_TUNABLES_WARN_ONLY") != "" {
		b = KernelTunableWarn
	}
"""
assert old in s and "KUBELET_KERNEL_TUNABLES_WARN_ONLY" not in s
open(p,'w').write(s.replace(old,new))
PY
  # Patch 4 (startup speed): cAdvisor (in the kubelet) asks dockerd for its root dir 5 times, 1 s apart, before
  # falling back to --docker-root; with no Docker that is a fixed 5 s of every kubelet start. Ask once, no sleep.
  f=vendor/github.com/google/cadvisor/container/docker/factory.go
  sed -i 's/^const rootDirRetries = 5$/const rootDirRetries = 1/; s/^const rootDirRetryPeriod time.Duration = 1000 \* time.Millisecond$/const rootDirRetryPeriod time.Duration = 0/' "$f"
  grep -q '^const rootDirRetries = 1$' "$f"; grep -q '^const rootDirRetryPeriod time.Duration = 0$' "$f"
}

VER=$(apt-cache showsrc kubernetes 2>/dev/null | awk '/^Version:/{print $2; exit}')
[ -n "$VER" ] || { echo "no deb-src for kubernetes: run install-deps.sh first" >&2; exit 1; }
KEY="${VER//[^A-Za-z0-9.]/_}-$( { declare -f apply_patches; echo "$BINS"; } | sha256sum | cut -c1-12)"
OUT=$CACHE/bin-$KEY
if [ -f "$OUT/.complete" ]; then echo "cached: $OUT" >&2; echo "$OUT"; exit 0; fi
[ "${1:-}" != --cached-only ] || { echo "not built yet: $OUT (run $0)" >&2; exit 1; }
mkdir -p "$CACHE"; exec 9>"$CACHE/.build.lock"; flock 9   # one build at a time
if [ -f "$OUT/.complete" ]; then echo "$OUT"; exit 0; fi  # built while we waited

WORK=$CACHE/src-$KEY
rm -rf "$WORK" "$OUT.tmp"; mkdir -p "$WORK" "$OUT.tmp"
cd "$WORK"
T0=$(date +%s)
apt-get source --download-only "kubernetes=$VER" >/dev/null 2>&1
tar xzf kubernetes_*.orig.tar.gz
cd kubernetes-1.20.2
apply_patches
mkdir -p .go/src/k8s.io && ln -sfn ../../.. .go/src/k8s.io/kubernetes
export GOPATH=$PWD/.go CGO_ENABLED=0 HOME=${HOME:-/root}
T1=$(date +%s); echo "source fetch+untar+patch: $((T1-T0))s" >&2
make WHAT="$(for b in $BINS; do printf 'cmd/%s ' $b; done)" >&2
T2=$(date +%s); echo "make: $((T2-T1))s" >&2
for b in $BINS; do cp _output/bin/$b "$OUT.tmp"/; done
cd /
[ -n "${KEEP_SRC:-}" ] || rm -rf "$WORK"
echo "$VER" > "$OUT.tmp"/.debian-source-version
touch "$OUT.tmp"/.complete
mv "$OUT.tmp" "$OUT"
"$OUT"/kubelet --version >&2
echo "total build: $(( $(date +%s) - T0 ))s" >&2
echo "$OUT"
