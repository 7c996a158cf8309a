#!/usr/bin/env bash
# A real, throw-away Kubernetes control plane on loopback for the kubestyle cluster tests:
# etcd + kube-apiserver + kube-controller-manager + kube-scheduler, each in its own process group,
# everything (PKI, etcd data, logs, pids) under one directory. No kubelet: see process-kubelet.py
# and up.sh.
#
#   tests/cluster/control-plane.sh start DIR    # prints DIR/admin.kubeconfig once /readyz answers ok
#   tests/cluster/control-plane.sh stop DIR     # stops every process it started (TERM, then KILL)
#   tests/cluster/control-plane.sh status DIR   # one line per component; exit 1 if any is down
#
# Environment:
#   KUBESTYLE_K8S_BIN            folder with kube-apiserver, kube-controller-manager, kube-scheduler
#                                (default /work/k8s/bin)
#   KUBESTYLE_ETCD               the etcd binary (default: etcd on PATH)
#   KUBESTYLE_K8S_START_TIMEOUT  seconds to wait for each component to be ready (default 180)
#   KUBESTYLE_K8S_VERBOSITY      klog -v for the Kubernetes components (default 1)
#
# Re-running `start` on a stopped DIR reuses its PKI and etcd data (the cluster's objects survive;
# the ports are new, so admin.kubeconfig is rewritten). `rm -rf DIR` for a fresh cluster.
set -euo pipefail

usage() { echo "usage: $0 start|stop|status DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$2
bin=${KUBESTYLE_K8S_BIN:-/work/k8s/bin}
etcd_bin=${KUBESTYLE_ETCD:-etcd}
timeout=${KUBESTYLE_K8S_START_TIMEOUT:-180}
verbosity=${KUBESTYLE_K8S_VERBOSITY:-1}
# Stop order: the reverse of the start order.
components=(kube-scheduler kube-controller-manager kube-apiserver etcd)

say() { echo "control-plane: $*" >&2; }
die() { say "error: $*"; exit 1; }

# Processes of process group $1 that are not zombies (a zombie's parent may be a shell that is gone).
group_alive() {
  local pg=$1
  ps -e -o pgid=,stat= 2>/dev/null | awk -v pg="$pg" '$1 == pg && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

pid_of() { [ -s "$dir/run/$1.pid" ] && cat "$dir/run/$1.pid" || true; }

# Stop one component: TERM to its process group, up to $2 seconds, then KILL.
stop_one() {
  local name=$1 grace=${2:-20} pg
  pg=$(pid_of "$name")
  [ -n "$pg" ] || return 0
  if group_alive "$pg"; then
    kill -TERM -- "-$pg" 2>/dev/null || true
    local deadline=$((SECONDS + grace))
    while group_alive "$pg" && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    if group_alive "$pg"; then
      say "$name (pgid $pg) still running after ${grace}s: KILL"
      kill -KILL -- "-$pg" 2>/dev/null || true
      while group_alive "$pg"; do sleep 0.1; done
    fi
    say "stopped $name (pgid $pg)"
  fi
  rm -f "$dir/run/$name.pid"
}

stop_all() {
  local c
  for c in "${components[@]}"; do stop_one "$c" 20; done
}

# N distinct free TCP ports on 127.0.0.1 (all held open at once, so they differ).
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))
EOF
}

# shellcheck source=tests/cluster/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# launch NAME CMD...: daemon with output to DIR/logs/NAME.log and its pid in DIR/run/NAME.pid.
launch() {
  local name=$1
  shift
  daemon "$dir/logs/$name.log" "$@"
  echo $! >"$dir/run/$name.pid"
}

# wait_until NAME DESCRIPTION CHECK...: poll CHECK (a command) every 0.2 s until it succeeds;
# fail with the component's log tail if its process group died or the timeout passed.
wait_until() {
  local name=$1 what=$2 start=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ! group_alive "$(pid_of "$name")"; then
      tail -n 30 "$dir/logs/$name.log" >&2 || true
      stop_all
      die "$name exited before $what (log: $dir/logs/$name.log)"
    fi
    if [ $((SECONDS - start)) -ge "$timeout" ]; then
      tail -n 30 "$dir/logs/$name.log" >&2 || true
      stop_all
      die "timed out after ${timeout}s waiting for $what (log: $dir/logs/$name.log)"
    fi
    sleep 0.2
  done
}

# ---- PKI (openssl only) ------------------------------------------------------------------------
pki=""
gen_key_ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# sign NAME SUBJECT EXT: key NAME.key, cert NAME.crt signed by the CA with extension section EXT.
sign() {
  local name=$1 subj=$2 ext=$3
  gen_key_ec "$pki/$name.key"
  openssl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" -config "$pki/openssl.cnf"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 \
    -extfile "$pki/openssl.cnf" -extensions "$ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr"
}

gen_pki() {
  pki=$dir/pki
  if [ -s "$pki/ca.crt" ] && [ -s "$pki/sa.key" ] && [ -s "$pki/admin.crt" ]; then
    return 0
  fi
  mkdir -p "$pki"
  chmod 700 "$pki"
  cat >"$pki/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local, IP:127.0.0.1, IP:10.0.0.1
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  gen_key_ec "$pki/ca.key"
  openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=kubestyle-test-ca" -days 3650 -sha256 \
    -config "$pki/openssl.cnf" -extensions v3_ca -out "$pki/ca.crt"
  sign apiserver "/CN=kube-apiserver" server
  sign admin "/O=system:masters/CN=kubestyle-admin" client
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" client
  sign controller-manager "/CN=system:kube-controller-manager" client
  sign scheduler "/CN=system:kube-scheduler" client
  # The process kubelet registers the node, creates PVs and reads Secrets: cluster-admin is simplest.
  sign kubelet "/O=system:masters/CN=kubestyle-process-kubelet" client
  # Service-account token signing key (RS256).
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  chmod 600 "$pki"/*.key
}

b64() { base64 -w0 <"$1"; }

# kubeconfig FILE USER: embedded CA and client cert/key (pki/USER.crt, pki/USER.key).
kubeconfig() {
  local file=$1 user=$2
  (
    umask 077
    cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kubestyle-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(b64 "$pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(b64 "$pki/$user.crt")
    client-key-data: $(b64 "$pki/$user.key")
contexts:
- name: kubestyle-test
  context:
    cluster: kubestyle-test
    user: $user
current-context: kubestyle-test
EOF
  )
}

https_ok() { # URL: 200 with the admin client cert
  curl -sf --max-time 5 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$1"
}
insecure_ok() { curl -skf --max-time 5 "$1"; }
default_sa_exists() {
  https_ok "https://127.0.0.1:$api_port/api/v1/namespaces/default/serviceaccounts/default"
}

start() {
  local c b t0=$SECONDS
  for b in kube-apiserver kube-controller-manager kube-scheduler; do
    [ -x "$bin/$b" ] || die "$bin/$b not found or not executable (set KUBESTYLE_K8S_BIN; see tests/cluster/README.md)"
  done
  command -v "$etcd_bin" >/dev/null || die "etcd not found (install Debian's etcd-server or set KUBESTYLE_ETCD)"
  for b in openssl curl python3 setsid; do command -v $b >/dev/null || die "$b is required"; done
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  mkdir -p "$dir/logs" "$dir/run"
  for c in "${components[@]}"; do
    if [ -n "$(pid_of "$c")" ] && group_alive "$(pid_of "$c")"; then
      die "$c is already running for $dir (pgid $(pid_of "$c")); run: $0 stop $dir"
    fi
  done
  gen_pki
  local etcd_port etcd_peer_port cm_port sched_port
  read -r etcd_port etcd_peer_port api_port cm_port sched_port <<<"$(free_ports 5)"
  printf 'etcd=%s\netcd_peer=%s\napiserver=%s\ncontroller_manager=%s\nscheduler=%s\n' \
    "$etcd_port" "$etcd_peer_port" "$api_port" "$cm_port" "$sched_port" >"$dir/run/ports"

  mkdir -p "$dir/etcd"
  chmod 700 "$dir/etcd"
  launch etcd "$etcd_bin" --name kubestyle-test --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "kubestyle-test=http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster-state new --initial-cluster-token kubestyle-test \
    --snapshot-count 10000 --quota-backend-bytes 2147483648 --log-level warn
  wait_until etcd "etcd /health" curl -sf --max-time 3 "http://127.0.0.1:$etcd_port/health"
  say "etcd ready on 127.0.0.1:$etcd_port after $((SECONDS - t0))s"

  launch kube-apiserver "$bin/kube-apiserver" \
    --v="$verbosity" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --endpoint-reconciler-type=none \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --requestheader-client-ca-file="$pki/ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP \
    --allow-privileged=false \
    --profiling=false
  kubeconfig "$dir/admin.kubeconfig" admin
  kubeconfig "$dir/controller-manager.kubeconfig" controller-manager
  kubeconfig "$dir/scheduler.kubeconfig" scheduler
  kubeconfig "$dir/kubelet.kubeconfig" kubelet
  wait_until kube-apiserver "kube-apiserver /readyz" https_ok "https://127.0.0.1:$api_port/readyz"
  say "kube-apiserver ready on https://127.0.0.1:$api_port after $((SECONDS - t0))s"

  launch kube-controller-manager "$bin/kube-controller-manager" \
    --v="$verbosity" \
    --kubeconfig="$dir/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$dir/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$dir/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$cm_port" \
    --leader-elect=false \
    --controllers='*' \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/sa.key" \
    --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --cluster-name=kubestyle-test \
    --profiling=false
  launch kube-scheduler "$bin/kube-scheduler" \
    --v="$verbosity" \
    --kubeconfig="$dir/scheduler.kubeconfig" \
    --authentication-kubeconfig="$dir/scheduler.kubeconfig" \
    --authorization-kubeconfig="$dir/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$sched_port" \
    --leader-elect=false \
    --profiling=false
  wait_until kube-controller-manager "kube-controller-manager /healthz" insecure_ok "https://127.0.0.1:$cm_port/healthz"
  wait_until kube-scheduler "kube-scheduler /healthz" insecure_ok "https://127.0.0.1:$sched_port/healthz"
  # The controllers really run once the service-account controller has made default/default.
  wait_until kube-controller-manager "the default ServiceAccount" default_sa_exists
  say "control plane ready after $((SECONDS - t0))s (logs: $dir/logs)"
  echo "$dir/admin.kubeconfig"
}

status() {
  local c pg rc=0
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler; do
    pg=$(pid_of "$c")
    if [ -n "$pg" ] && group_alive "$pg"; then echo "$c running (pgid $pg)"; else echo "$c stopped"; rc=1; fi
  done
  return $rc
}

case $cmd in
  start) start ;;
  stop)
    [ -d "$dir" ] || die "no such directory: $dir"
    dir=$(cd "$dir" && pwd)
    stop_all
    ;;
  status)
    [ -d "$dir" ] || die "no such directory: $dir"
    dir=$(cd "$dir" && pwd)
    status
    ;;
  *) usage ;;
esac
