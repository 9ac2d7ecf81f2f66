#!/bin/bash
# Build the Kubernetes backend's sandbox image of each named harness (umoci + skopeo, no registry):
#   localhost/lap-sandbox-<harness>:<tag>, <tag> = hash of all inputs (this script, lap_sandboxd, msgspec,
#   the harness's install dir, the host packages copied in), as a docker-archive tar in $CACHE/images
#   (no-op when it exists, FORCE=1 rebuilds), imported into the cluster's containerd when one runs.
# Layer 1: busybox, bash, python3.11 (+ lap_sandboxd and msgspec in /opt/lap/python), node, the libs they
#   link, CA certificates, root/agent(1000)/nobody, /workspace /home/agent /run/lap (owned by 1000), /tmp.
# Layer 2: the harness's npm tree (`lap harness install`) at /opt/lap/harness, plus any library its native
#   CLI links that layer 1 lacks (librt for claude). Layer 1 is the same for every harness (shared in containerd).
# Usage (as root): build-sandbox-image.sh HARNESS...  -> one image reference per harness on stdout
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 HARNESS..." >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "$0: run as root" >&2; exit 1; }
for tool in umoci skopeo rsync /bin/busybox; do
  command -v $tool >/dev/null || { echo "$0: $tool is missing: run tests/k8s/cluster/install-deps.sh" >&2; exit 1; }
done
SELF=$(readlink -f "$0"); REPO=$(cd "$(dirname "$SELF")/../../.." && pwd); PY=$REPO/.venv/bin/python
CACHE=${LAP_K8S_CACHE:-/var/cache/lap-k8s}; I=$CACHE/images; SOCK=/var/tmp/lap-k8s/containerd/containerd.sock
MSGSPEC=$("$PY" -c 'import msgspec, os; print(os.path.dirname(msgspec.__file__))')
# where `lap harness install` put each harness (lap_core._install.harness_dir under the configured root)
mapfile -t DIRS < <(cd "$REPO" && "$PY" - "$@" <<'EOF'
import sys
from lap_core._install import harness_dir
from lap_core._runtime import Lap, _build
lap = Lap(run_turns=False)
*_, settings = lap._configure()
specs = lap.plugins.harnesses()
for name in sys.argv[1:]:
    if name not in specs:
        sys.exit(f"unknown harness {name!r} (known: {', '.join(specs)})")
    print(harness_dir(lap.harness_root, name, _build(specs[name], settings.get(f"harness:{name}"))))
EOF
)
[ ${#DIRS[@]} = $# ] || exit 1
files() { (cd "$1" && find "$2" -name __pycache__ -prune -o -type f -print | LC_ALL=C sort | xargs sha256sum); }
COMMON=$({ sha256sum < "$SELF"; files "$REPO" lap_sandboxd; files "$MSGSPEC/.." msgspec
  dpkg-query -W bash busybox-static ca-certificates libc6 nodejs python3.11-minimal libpython3.11-stdlib; } | sha256sum)
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
mkdir -p "$I"

copylibs() {  # $1 = dir, $2 = base rootfs, then binaries: copy to $1 the shared libraries they link that $2 lacks
  local r=$1 b=$2 f lib t; shift 2
  for f; do for lib in $(ldd "$f" 2>/dev/null | grep -o '/[^ ]*'); do
    t=$lib; case $t in /lib/* | /lib64/*) t=/usr$t ;; esac  # /lib is a symlink in the image
    [ -e "$b$t" ] || [ -e "$r$t" ] || { mkdir -p "$r$(dirname "$t")"; cp -L "$lib" "$r$t"; }
  done; done
}
mkbase() {  # $1 = rootfs: everything but the harness
  local r=$1 a
  mkdir -p "$r"/usr/{bin,lib,lib64} "$r"/{etc/ssl/certs,proc,sys,dev,root,run/lap,tmp,var/tmp,workspace,home/agent,opt/lap/python}
  ln -s usr/bin "$r"/bin; ln -s usr/bin "$r"/sbin; ln -s bin "$r"/usr/sbin; ln -s usr/lib "$r"/lib; ln -s usr/lib64 "$r"/lib64
  cp /usr/bin/bash /usr/bin/node /usr/bin/python3.11 /bin/busybox "$r"/usr/bin/; ln -s python3.11 "$r"/usr/bin/python3
  for a in $(/bin/busybox --list); do [ -e "$r/usr/bin/$a" ] || ln -s busybox "$r/usr/bin/$a"; done  # incl. env
  rsync -a --exclude test --exclude __pycache__ --exclude site-packages --exclude dist-packages \
    --exclude idlelib --exclude tkinter --exclude turtledemo --exclude ensurepip /usr/lib/python3.11 "$r"/usr/lib/
  copylibs "$r" "$r" /usr/bin/bash /usr/bin/node /usr/bin/python3.11 "$r"/usr/lib/python3.11/lib-dynload/*.so
  rsync -a --exclude __pycache__ "$REPO"/lap_sandboxd "$MSGSPEC" "$r"/opt/lap/python/
  printf 'root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:agent:/home/agent:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' > "$r"/etc/passwd
  printf 'root:x:0:\nagent:x:1000:\nnogroup:x:65534:\n' > "$r"/etc/group
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$r"/etc/nsswitch.conf
  cp /etc/ssl/certs/ca-certificates.crt "$r"/etc/ssl/certs/; ln -s certs/ca-certificates.crt "$r"/etc/ssl/cert.pem
  chmod 1777 "$r"/tmp "$r"/var/tmp; chown 1000:1000 "$r"/workspace "$r"/home/agent "$r"/run/lap
}
# layers by GNU tar, not `umoci insert`: umoci 0.4.7's insert leaves the tar trailer out (opencontainers/umoci#436)
tarl() { tar --format=gnu --sort=name --numeric-owner "$@"; }

REFS=()
for n in $(seq $#); do
  h=${!n}; d=${DIRS[n-1]}
  [ -f "$d/.lap-installed" ] || { echo "$0: harness $h is not installed ($d): run .venv/bin/lap harness install $h" >&2; exit 1; }
  tag=$({ echo "$COMMON"; echo "$h/$(basename "$d")"; } | sha256sum | cut -c1-12)
  ref=localhost/lap-sandbox-$h:$tag; tar=$I/lap-sandbox-$h-$tag.tar; REFS+=("$ref")
  exec 9>"$I/.lap-sandbox-$h.lock"; flock 9  # one build per harness at a time; a waiter then finds it cached
  if [ -n "${FORCE:-}" ] || [ ! -f "$tar" ]; then
    start=$SECONDS; echo "building $ref from $d" >&2
    if [ ! -d "$W"/img ]; then
      mkbase "$W"/base; (cd "$W"/base && tarl --mtime=@946684800 -cf ../base.tar -- *)
      umoci init --layout "$W"/img && umoci new --image "$W"/img:base
      umoci raw add-layer --image "$W"/img:base "$W"/base.tar
      umoci config --image "$W"/img:base --config.user 1000:1000 --config.workingdir /workspace \
        --config.env PATH=/opt/lap/harness/node_modules/.bin:/usr/local/bin:/usr/bin:/bin --config.env HOME=/home/agent \
        --config.env USER=agent --config.env LANG=C.UTF-8 --config.env TMPDIR=/tmp --config.env PYTHONPATH=/opt/lap/python \
        --config.cmd python3 --config.cmd -B --config.cmd -m --config.cmd lap_sandboxd \
        --config.cmd --socket --config.cmd /run/lap/sandboxd.sock --config.cmd --state --config.cmd /run/lap/state
    fi
    tarl -cf "$W/$h.tar" -C "$d" --transform 's,^\.,opt/lap/harness,S' .
    copylibs "$W/libs-$h" "$W"/base "$d"/node_modules/.bin/*  # native CLIs (claude, opencode) may link more
    [ ! -d "$W/libs-$h"/usr ] || tarl --mtime=@946684800 -rf "$W/$h.tar" -C "$W/libs-$h" usr
    umoci raw add-layer --image "$W"/img:base --tag "$h" "$W/$h.tar"
    rm -f "$tar.partial"; skopeo copy -q "oci:$W/img:$h" "docker-archive:$tar.partial:$ref"
    find "$I" -name "lap-sandbox-$h-????????????.tar" ! -name "${tar##*/}" -delete; mv "$tar.partial" "$tar"
    echo "built $tar ($(du -m "$tar" | cut -f1) MB) in $((SECONDS - start)) s" >&2
  else
    echo "cached: $tar" >&2
  fi
  if [ -S "$SOCK" ]; then
    if ctr -a "$SOCK" -n k8s.io images ls -q | grep -qxF "$ref"; then echo "already in containerd: $ref" >&2
    else echo "importing $ref into containerd" >&2; ctr -a "$SOCK" -n k8s.io images import "$tar" >/dev/null; fi
  fi
done
printf '%s\n' "${REFS[@]}"
