#!/bin/bash
# Stop the cluster started by up.sh, by recorded PID; kill leftover pod containers; unmount leftovers;
# delete the private netns (if one was used) and the host-side dirs that kubelet/containerd/CNI create
# outside $K8S_DIR. Keeps the build/image cache. Prints per-daemon stop times.
HERE=$(cd "$(dirname "$0")" && pwd)
D=${K8S_DIR:-/var/tmp/lap-k8s}; S=$D/state; A=$D/containerd/containerd.sock
NETNS=$(cat $D/netns 2>/dev/null || true)
stop() {  # graceful TERM, up to 10 s, then KILL
  local p; p=$(cat "$S/$1.pid" 2>/dev/null) || return 0; kill "$p" 2>/dev/null || return 0
  local t0=$(date +%s.%N)
  for i in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && { kill -9 "$p"; echo "$1: KILLed after 10 s"; } || printf '%s stopped in %.1fs\n' $1 "$(echo "$(date +%s.%N)-$t0"|bc)"
  rm -f "$S/$1.pid"
}
for f in kubelet scheduler kcm apiserver etcd; do stop $f & done   # all in parallel (throwaway state)
if [ -S $A ] && kill -0 "$(cat $S/containerd.pid 2>/dev/null)" 2>/dev/null; then
  for t in $(ctr -a $A -n k8s.io tasks ls -q 2>/dev/null); do ctr -a $A -n k8s.io tasks kill -s SIGKILL "$t" 2>/dev/null; done
  for i in $(seq 1 20); do [ -z "$(ctr -a $A -n k8s.io tasks ls -q 2>/dev/null | head -1)" ] && break; sleep 0.1; done
  for t in $(ctr -a $A -n k8s.io tasks ls -q 2>/dev/null); do ctr -a $A -n k8s.io tasks delete -f "$t" >/dev/null 2>&1; done
  for c in $(ctr -a $A -n k8s.io containers ls -q 2>/dev/null); do ctr -a $A -n k8s.io containers delete "$c" >/dev/null 2>&1; done
fi
stop containerd
wait
# leftover shims of this containerd (their cmdline names our state dir's socket address)
for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $A" 2>/dev/null); do kill -9 $p 2>/dev/null; done
# kubelet leaves tmpfs/bind mounts (secrets, configmaps, emptyDir medium=Memory, its rshared root); overlay rootfs
grep -o " $D/[^ ]*" /proc/self/mounts | sort -r | while read m; do umount "$m" 2>/dev/null || umount -l "$m"; done
grep -o " /run/containerd/io.containerd.runtime.v2.task/k8s.io/[^ ]*" /proc/self/mounts | sort -r | while read m; do umount -l "$m"; done
for n in $(ls /run/netns 2>/dev/null | grep '^cni-'); do ip netns del $n 2>/dev/null; done
[ -n "$NETNS" ] && ip netns del "$NETNS" 2>/dev/null
# host paths kubelet 1.20 / containerd 1.6 / CNI write despite the custom dirs
rm -rf /var/log/pods /var/log/containers /var/lib/kubelet/device-plugins /var/lib/cni/results \
  /run/containerd/io.containerd.runtime.v2.task/k8s.io /run/containerd/runc/k8s.io /run/containerd/s \
  /run/containerd/fifo /opt/containerd /usr/libexec/kubernetes 2>/dev/null
rmdir /var/lib/cni /var/lib/kubelet /run/containerd/io.containerd.runtime.v2.task /run/containerd/runc /run/containerd 2>/dev/null
true
