#!/bin/bash
# Checks against a running up.sh cluster (run as `./in-netns.sh ./e2e.sh` in NETNS mode; plain ./e2e.sh otherwise).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); M=$HERE/manifests; CRDS=$HERE/../../../deploy/agent-sandbox-crds
D=${K8S_DIR:-/var/tmp/lap-k8s}; export KUBECONFIG=$D/state/kubeconfig PATH=$(cat $D/bindir):$PATH
NETNS=$(cat $D/netns); FAIL=0; PASS=0
ok() { echo "PASS: $*"; PASS=$((PASS+1)); }; bad() { echo "FAIL: $*"; FAIL=$((FAIL+1)); }
t() { date +%s.%N; }; d() { printf '%.2f' "$(echo "$2-$1"|bc)"; }
kubectl version --short 2>/dev/null | sed 's/^/  /'

echo "== 1. CRDs"
kubectl get crd -o custom-columns=NAME:.metadata.name,ESTABLISHED:.status.conditions[?\(@.type==\"Established\"\)].status --no-headers
[ "$(kubectl get crd -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Established")].status}{"\n"}{end}' | grep -c True)" = 4 ] && ok "4 CRDs Established" || bad "CRDs not established"
kubectl get crd sandboxes.agents.x-k8s.io -o yaml | grep -q x-kubernetes-validations && bad "CEL rule kept?" || ok "1.20 apiserver silently dropped x-kubernetes-validations (CEL not enforced)"
out=$(kubectl apply --dry-run=server -f $CRDS/agents.x-k8s.io_sandboxes.yaml 2>&1 | tail -1); echo "  kubectl apply (client validation): ${out:0:200}"
out=$(kubectl apply --validate=false --server-side --dry-run=server -f $CRDS/agents.x-k8s.io_sandboxes.yaml 2>&1 | tail -1); echo "  kubectl apply --server-side: ${out:0:200}"
kubectl create -f $M/sandbox.yaml >/dev/null && ok "Sandbox v1beta1 created (empty-string field accepted)" || bad "Sandbox create"
echo "  defaulted: $(kubectl get sandbox sb1 -o jsonpath='{.spec.operatingMode}/{.spec.shutdownPolicy}')"
out=$(kubectl patch sandbox sb1 --type=merge -p '{"spec":{"operatingMode":"Paused"}}' 2>&1); grep -q 'Unsupported value' <<<"$out" && ok "enum validation enforced (422)" || bad "enum validation"
kubectl get sandboxes.v1alpha1.agents.x-k8s.io sb1 >/dev/null 2>&1 && bad "v1alpha1 read worked?" || ok "v1alpha1 read fails (conversion webhook absent), as expected"
kubectl delete sandbox sb1 >/dev/null

echo "== 2. python http.server pod (imagePullPolicy: Never)"
[ -n "$NETNS" ] && W=$M/web-podnet.yaml PORT=8080 || W=$M/web-hostnet.yaml PORT=18080
T0=$(t); kubectl create -f $W >/dev/null
until [ "$(kubectl get pod web -o jsonpath='{.status.phase}')" = Running ]; do sleep 0.05; done; T1=$(t)
kubectl wait --for=condition=Ready pod/web --timeout=60s >/dev/null; T2=$(t)
echo "  create->Running $(d $T0 $T1)s, create->Ready $(d $T0 $T2)s (polling via kubectl, ~0.1 s resolution)"
IP=$(kubectl get pod web -o jsonpath='{.status.podIP}'); echo "  podIP=$IP"
kubectl exec web -- sh -c 'echo hello-from-pod > /tmp/index.html' && ok "kubectl exec" || bad "kubectl exec"
[ "$(echo abc | kubectl exec -i web -- cat)" = abc ] && ok "kubectl exec -i (stdin)" || bad "exec stdin"
curl -sf --max-time 5 http://$IP:$PORT/index.html | grep -q hello-from-pod && ok "curl pod IP $IP:$PORT from host side" || bad "curl pod IP"
kubectl port-forward pod/web 28080:$PORT --address 127.0.0.1 >/tmp/pf.log 2>&1 & PF=$!
for i in $(seq 50); do curl -sf --max-time 1 http://127.0.0.1:28080/index.html >/tmp/pf.out 2>/dev/null && break; sleep 0.1; done
grep -q hello-from-pod /tmp/pf.out && ok "kubectl port-forward 127.0.0.1:28080 -> pod:$PORT" || bad "port-forward"
kill $PF; wait $PF 2>/dev/null
kubectl logs web | grep -q 'GET /index.html' && ok "kubectl logs" || bad "logs"
T0=$(t); kubectl delete pod web --grace-period=0 --force >/dev/null 2>&1; echo "  force delete $(d $T0 $(t))s"

echo "== 3. static hostPath PV + PVC"
T0=$(t); kubectl create -f $M/pv-pvc.yaml >/dev/null; kubectl create -f $M/pvc-pod.yaml >/dev/null
kubectl wait --for=condition=Ready pod/writer --timeout=60s >/dev/null; T1=$(t)
echo "  pv+pvc+pod -> Ready $(d $T0 $T1)s; pvc phase=$(kubectl get pvc data -o jsonpath='{.status.phase}') pv=$(kubectl get pvc data -o jsonpath='{.spec.volumeName}')"
kubectl exec writer -- sh -c 'echo persisted-$$ > /data/marker; cat /data/marker' > /tmp/marker.want
kubectl delete pod writer --grace-period=0 --force >/dev/null 2>&1
while kubectl get pod writer >/dev/null 2>&1; do sleep 0.1; done
kubectl create -f $M/pvc-pod.yaml >/dev/null; kubectl wait --for=condition=Ready pod/writer --timeout=60s >/dev/null
[ "$(kubectl exec writer -- cat /data/marker)" = "$(cat /tmp/marker.want)" ] && ok "file survived pod delete+recreate ($(cat /tmp/marker.want))" || bad "PVC persistence"
echo "  boots.log lines: $(kubectl exec writer -- sh -c 'wc -l < /data/boots.log'); host dir: $(ls $D/pv/pv1)"
kubectl delete pod writer --grace-period=0 --force >/dev/null 2>&1
kubectl delete pvc data --wait=true --timeout=30s >/dev/null && kubectl delete pv pv1 --timeout=30s >/dev/null && ok "pvc/pv delete (protection finalizers removed)" || bad "pv/pvc delete hung"

echo "== 4. sequential pod create->Ready x5 (busybox)"
for i in 1 2 3 4 5; do
  T0=$(t)
  kubectl run p$i --image=localhost/busybox:1 --image-pull-policy=Never --restart=Never \
    --overrides='{"spec":{"hostNetwork":true,"terminationGracePeriodSeconds":0}}' -- sleep 3600 >/dev/null
  kubectl wait --for=condition=Ready pod/p$i --timeout=60s >/dev/null; echo -n "$(d $T0 $(t))s "
done; echo
kubectl delete pods --all --grace-period=0 --force >/dev/null 2>&1
echo "$PASS passed, $FAIL failed"
[ $FAIL = 0 ]
