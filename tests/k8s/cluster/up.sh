#!/bin/bash
# Start a single-node Kubernetes 1.20.2 test cluster on this machine, everything on 127.0.0.1:
#   containerd (+runc) and etcd in parallel (+ image import in background) -> kube-apiserver -> kube-controller-manager
#   + kube-scheduler + kubelet (node "127.0.0.1") + agent-sandbox CRDs. About 8 s warm.
# Needs the cache from build-k8s.sh and build-images.sh (run them first; both are no-ops when cached).
# Env:
#   K8S_DIR   state dir, wiped on every start (default /var/tmp/lap-k8s)
#   CRD_DIR   CRDs to load (default deploy/agent-sandbox-crds in this repository; "" = none)
#   NETNS     if set (e.g. NETNS=lap-k8s), create that network namespace, give it the CNI bridge
#             10.88.0.0/24 and run the whole cluster inside it: real pod IPs; clients must run in it
#             too (`./in-netns.sh CMD...`). Unset: host netns, no CNI, only hostNetwork pods start.
# Prints: KUBECONFIG path + phase timings.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
export K8S_DIR=${K8S_DIR:-/var/tmp/lap-k8s}
CRD_DIR=${CRD_DIR-$(cd "$HERE/../../../deploy/agent-sandbox-crds" && pwd)}
B=$("$HERE"/build-k8s.sh --cached-only | tail -1)
"$HERE"/build-images.sh 2>/dev/null
IMG=${LAP_K8S_CACHE:-/var/cache/lap-k8s}/images
[ -n "${LAP_K8S_INNER:-}" ] || "$HERE"/down.sh >/dev/null 2>&1 || true   # stop a previous cluster (any mode)
if [ -n "${NETNS:-}" ] && [ -z "${LAP_K8S_INNER:-}" ]; then
  [ -e /run/netns/$NETNS ] || { ip netns add "$NETNS"; ip netns exec "$NETNS" ip link set lo up; }
  # nsenter --net only (ip netns exec would also remount /sys and hide /sys/fs/cgroup)
  LAP_K8S_INNER=1 exec nsenter --net=/run/netns/$NETNS "$0" "$@"
fi
D=$K8S_DIR; S=$D/state; K=$D/kubelet; C=$D/containerd
rm -rf "$D"; mkdir -p "$S"/{etcd,pki,logs} "$K"/{root,pki,volume-plugins} "$C"/{root,state} "$D"/cni/net.d "$D"/pv
echo "$B" > "$D"/bindir; echo "${NETNS:-}" > "$D"/netns
export PATH=$B:$PATH KUBECONFIG=$S/kubeconfig
t() { date +%s.%N; }; d() { printf '%.2f' "$(echo "$2-$1"|bc)"; }
T0=$(t)

# --- containerd and etcd need no PKI: start both at once
cat > $C/config.toml <<CT
version = 2
root = "$C/root"
state = "$C/state"
[grpc]
  address = "$C/containerd.sock"
[ttrpc]
  address = "$C/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:1"
  disable_apparmor = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$D/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
CT
# CNI (NETNS mode only): a bridge inside the private netns
if [ -n "${NETNS:-}" ]; then
cat > $D/cni/net.d/10-podnet.conflist <<CNI
{"cniVersion":"0.4.0","name":"podnet","plugins":[{"type":"bridge","bridge":"k8sbr0","isGateway":true,
 "ipMasq":false,"hairpinMode":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.88.0.0/24"}]],
 "routes":[{"dst":"0.0.0.0/0"}],"dataDir":"$D/cni/ipam"}},{"type":"portmap","capabilities":{"portMappings":true}}]}
CNI
fi
containerd --config $C/config.toml > $S/logs/containerd.log 2>&1 & echo $! > $S/containerd.pid
etcd --name lap --data-dir $S/etcd --listen-client-urls http://127.0.0.1:23790 \
  --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 \
  --initial-advertise-peer-urls http://127.0.0.1:23800 --initial-cluster lap=http://127.0.0.1:23800 \
  --unsafe-no-fsync > $S/logs/etcd.log 2>&1 & echo $! > $S/etcd.pid

# --- PKI (ECDSA P-256: fast to generate): own CA, apiserver serving cert for 127.0.0.1/localhost,
#     admin client cert (O=system:masters), service-account signing key, static token
P=$S/pki; EC="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $EC -keyout $P/ca.key -out $P/ca.crt -days 30 -subj /CN=lap-k8s-ca 2>/dev/null
openssl req $EC -keyout $P/apiserver.key -out $P/apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1\nextendedKeyUsage=serverAuth\n' > $P/ext
openssl x509 -req -in $P/apiserver.csr -CA $P/ca.crt -CAkey $P/ca.key -CAcreateserial -out $P/apiserver.crt -days 30 -extfile $P/ext 2>/dev/null
openssl req $EC -keyout $P/admin.key -out $P/admin.csr -subj "/O=system:masters/CN=admin" 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' > $P/ext-client
openssl x509 -req -in $P/admin.csr -CA $P/ca.crt -CAkey $P/ca.key -CAcreateserial -out $P/admin.crt -days 30 -extfile $P/ext-client 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out $P/sa.key 2>/dev/null; openssl ec -in $P/sa.key -pubout -out $P/sa.pub 2>/dev/null
echo 'test-token,admin,admin-uid,"system:masters"' > $P/tokens.csv
cat > $S/kubeconfig <<KC
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:16443", certificate-authority: "$P/ca.crt"}}]
users:
- {name: admin, user: {token: test-token}}
- {name: admin-cert, user: {client-certificate: "$P/admin.crt", client-key: "$P/admin.key"}}
contexts:
- {name: local, context: {cluster: local, user: admin, namespace: default}}
- {name: local-cert, context: {cluster: local, user: admin-cert, namespace: default}}
current-context: local
KC
until ctr -a $C/containerd.sock version >/dev/null 2>&1; do sleep 0.05; done
( for i in pause busybox python; do ctr -a $C/containerd.sock -n k8s.io images import $IMG/$i.tar >/dev/null || exit 1; done; echo "$(t)" > $S/images.done ) &
IMPORT=$!
until ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:23790 endpoint health >/dev/null 2>&1; do sleep 0.05; done
T1=$(t)

# --- kube-apiserver
kube-apiserver --etcd-servers=http://127.0.0.1:23790 \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=16443 --insecure-port=0 \
  --tls-cert-file=$P/apiserver.crt --tls-private-key-file=$P/apiserver.key --client-ca-file=$P/ca.crt \
  --token-auth-file=$P/tokens.csv --authorization-mode=RBAC --allow-privileged=true \
  --service-account-issuer=https://kubernetes.default.svc \
  --service-account-key-file=$P/sa.pub --service-account-signing-key-file=$P/sa.key \
  --service-cluster-ip-range=10.96.0.0/16 --endpoint-reconciler-type=none \
  --disable-admission-plugins=ServiceAccount,TaintNodesByCondition --enable-priority-and-fairness=false \
  --kubelet-preferred-address-types=InternalIP,Hostname \
  > $S/logs/apiserver.log 2>&1 & echo $! > $S/apiserver.pid
until [ "$(curl -s --cacert $P/ca.crt -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer test-token' https://127.0.0.1:16443/readyz)" = 200 ]; do sleep 0.05; done
T2=$(t)

# --- controller-manager (all controllers except nodelifecycle, which would taint/evict the NotReady node;
#     pvclaimbinder 1 s so a PVC created together with its PV binds at once instead of after 15 s)
kube-controller-manager --kubeconfig=$S/kubeconfig --service-account-private-key-file=$P/sa.key \
  --root-ca-file=$P/ca.crt --controllers='*,-nodelifecycle' --flex-volume-plugin-dir=$K/volume-plugins \
  --pvclaimbinder-sync-period=1s --leader-elect=false --port=0 --secure-port=0 > $S/logs/kcm.log 2>&1 & echo $! > $S/kcm.pid
# --- scheduler
kube-scheduler --kubeconfig=$S/kubeconfig --authentication-kubeconfig=$S/kubeconfig \
  --authorization-kubeconfig=$S/kubeconfig --leader-elect=false --port=0 --bind-address=127.0.0.1 \
  --secure-port=10259 > $S/logs/scheduler.log 2>&1 & echo $! > $S/scheduler.pid
# --- kubelet: hostname-override=127.0.0.1 makes InternalIP 127.0.0.1 (--node-ip refuses loopback)
KUBELET_KERNEL_TUNABLES_WARN_ONLY=1 kubelet --kubeconfig=$S/kubeconfig \
  --hostname-override=127.0.0.1 --address=127.0.0.1 --port=10250 --read-only-port=0 \
  --healthz-bind-address=127.0.0.1 --healthz-port=10248 \
  --container-runtime=remote --container-runtime-endpoint=unix://$C/containerd.sock \
  --containerd=$C/containerd.sock --runtime-request-timeout=2m --cgroup-driver=cgroupfs --fail-swap-on=false \
  --root-dir=$K/root --cert-dir=$K/pki --volume-plugin-dir=$K/volume-plugins --register-node=true \
  --cgroups-per-qos=false --enforce-node-allocatable='' --oom-score-adj=0 \
  --make-iptables-util-chains=false --anonymous-auth=true --authorization-mode=AlwaysAllow \
  --cluster-domain=cluster.local --resolv-conf=/etc/resolv.conf --v=2 \
  > $S/logs/kubelet.log 2>&1 & echo $! > $S/kubelet.pid
# --- CRDs (plain create, --validate=false: see README), while the kubelet registers
if [ -n "$CRD_DIR" ]; then
  kubectl create --validate=false -f "$CRD_DIR" >/dev/null
  kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
fi
T3=$(t)
until kubectl get node 127.0.0.1 >/dev/null 2>&1; do
  sleep 0.1; kill -0 $(cat $S/kubelet.pid) 2>/dev/null || { echo "kubelet died:"; tail -30 $S/logs/kubelet.log; exit 1; }
done
T4=$(t)
wait $IMPORT || { echo "image import failed"; exit 1; }
T5=$(t)
echo "since start: etcd+PKI ready $(d $T0 $T1)s, apiserver ready $(d $T0 $T2)s, CRDs established $(d $T0 $T3)s, node registered $(d $T0 $T4)s, images imported $(d $T0 $(cat $S/images.done))s; total $(d $T0 $T5)s"
echo "KUBECONFIG=$S/kubeconfig  BIN=$B${NETNS:+  NETNS=$NETNS (run clients via $HERE/in-netns.sh)}"
