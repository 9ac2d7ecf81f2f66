#!/bin/bash
# Build the registry-less OCI images (umoci + skopeo) as docker-archive tars in $CACHE/images:
#   localhost/pause:1      busybox `sleep infinity` (containerd sandbox_image)
#   localhost/busybox:1    busybox-static with all applets
#   localhost/python:3.11  busybox + the host's Debian python3.11 (binary, its shared libs, stdlib)
# No-op when the tars exist (FORCE=1 rebuilds). Usage: build-images.sh
set -euo pipefail
CACHE=${LAP_K8S_CACHE:-/var/cache/lap-k8s}; I=$CACHE/images
[ -z "${FORCE:-}" ] && [ -f "$I/.complete" ] && { echo "cached: $I" >&2; exit 0; }
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
mkdir -p "$I"; rm -f "$I"/.complete
cd "$W"
mkrootfs() {  # $1 = dir
  mkdir -p "$1"/{bin,etc,tmp,proc,sys,dev,root,var,data}
  cp /bin/busybox "$1"/bin/
  for a in $("$1"/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$1"/bin/$a; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$1"/etc/passwd
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$1"/etc/group; chmod 1777 "$1"/tmp
}
mkrootfs rootfs
# python rootfs = busybox rootfs + /usr/bin/python3.11 + the libs ldd lists + stdlib (no tests, caches, site pkgs)
cp -a rootfs pyroot
mkdir -p pyroot/usr/bin pyroot/usr/lib
cp /usr/bin/python3.11 pyroot/usr/bin/; ln -s python3.11 pyroot/usr/bin/python3
for lib in $(ldd /usr/bin/python3.11 | grep -o '/[^ ]*'); do mkdir -p pyroot$(dirname $lib); cp -L $lib pyroot$lib; done
rsync -a --exclude test --exclude __pycache__ --exclude site-packages --exclude dist-packages \
  --exclude idlelib --exclude tkinter --exclude turtledemo --exclude ensurepip /usr/lib/python3.11 pyroot/usr/lib/
# extension modules' own deps (ssl, sqlite, ffi, ...): copy anything they link that is missing
for so in pyroot/usr/lib/python3.11/lib-dynload/*.so; do
  for lib in $(ldd "$so" 2>/dev/null | grep -o '/[^ ]*'); do [ -e pyroot$lib ] || { mkdir -p pyroot$(dirname $lib); cp -L $lib pyroot$lib; }; done
done
umoci init --layout img
umoci new --image img:pause && umoci insert --image img:pause rootfs / >/dev/null
umoci config --image img:pause --config.entrypoint /bin/sleep --config.cmd infinity --config.env PATH=/bin
umoci new --image img:busybox && umoci insert --image img:busybox rootfs / >/dev/null
umoci config --image img:busybox --config.cmd /bin/sh --config.env PATH=/bin --config.workingdir /
umoci new --image img:python && umoci insert --image img:python pyroot / >/dev/null
umoci config --image img:python --config.cmd python3 --config.env PATH=/usr/bin:/bin --config.workingdir /
skopeo copy -q oci:img:pause   docker-archive:"$I"/pause.tar:localhost/pause:1
skopeo copy -q oci:img:busybox docker-archive:"$I"/busybox.tar:localhost/busybox:1
skopeo copy -q oci:img:python  docker-archive:"$I"/python.tar:localhost/python:3.11
touch "$I"/.complete
ls -la "$I" >&2
