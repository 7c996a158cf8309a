#!/usr/bin/env bash
# A kubeconfig that acts as a ServiceAccount (a TokenRequest token), e.g. to run `pipeline submit`
# with exactly the permissions of manifests/base's Role:
#
#   tests/cluster/sa-kubeconfig.sh DIR kubestyle kubestyle-controller [SECONDS]
#   → prints DIR/sa-kubestyle-kubestyle-controller.kubeconfig (token valid SECONDS, default 3600)
#
# DIR is a cluster directory of control-plane.sh/up.sh; the ServiceAccount must exist.
set -euo pipefail

[ $# -ge 3 ] || { sed -n '2,8p' "$0" >&2; exit 2; }
dir=$(cd "$1" && pwd)
ns=$2
sa=$3
seconds=${4:-3600}
pki=$dir/pki
api=$(sed -n 's/^apiserver=//p' "$dir/run/ports")
[ -n "$api" ] || { echo "sa-kubeconfig.sh: no apiserver port in $dir/run/ports" >&2; exit 1; }

token=$(curl -sS --fail-with-body --max-time 10 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
  -H 'Content-Type: application/json' -X POST \
  -d "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenRequest\",\"spec\":{\"expirationSeconds\":$seconds}}" \
  "https://127.0.0.1:$api/api/v1/namespaces/$ns/serviceaccounts/$sa/token" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["status"]["token"])')

out=$dir/sa-$ns-$sa.kubeconfig
(
  umask 077
  cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kubestyle-test
  cluster:
    server: https://127.0.0.1:$api
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: $ns-$sa
  user:
    token: $token
contexts:
- name: kubestyle-test
  context:
    cluster: kubestyle-test
    namespace: $ns
    user: $ns-$sa
current-context: kubestyle-test
EOF
)
echo "$out"
