#!/usr/bin/env bash
# Smoke test of the cluster harness itself (not of kubestyle): brings a cluster up with up.sh and a
# bin dir of small shell scripts, checks what the kubestyle tests rely on, brings it down, and
# checks that no process is left. Needs kubectl (KUBECTL, default kubectl) and the binaries that
# control-plane.sh needs.
#
# usage: tests/cluster/smoke.sh [DIR]      (default: a new temporary directory, removed on success)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
dir=${1:-$(mktemp -d /tmp/kubestyle-cluster-smoke.XXXXXX)}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
kubectl_bin=${KUBECTL:-kubectl}
bin=$dir/smoke-bin
fails=0
up=false

k() { "$kubectl_bin" --kubeconfig "$dir/admin.kubeconfig" "$@" 2> >(grep -v '^WARNING: version difference' >&2); }
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
check() { # DESCRIPTION EXPECTED ACTUAL
  if [ "$2" = "$3" ]; then pass "$1"; else fail "$1: expected [$2], got [$3]"; fi
}
cleanup() {
  if $up; then "$here/down.sh" "$dir" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

# ---- the "stage binaries" -------------------------------------------------------------------------
mkdir -p "$bin"
cat >"$bin/echoer" <<'EOF'
#!/bin/sh
# echoer N [SLEEP]: N numbered lines, odd ones to stdout, even ones to stderr
n=${1:-3}; s=${2:-0}; i=1
while [ $i -le "$n" ]; do
  if [ $((i % 2)) -eq 1 ]; then echo "line $i"; else echo "line $i" >&2; fi
  i=$((i + 1)); [ "$s" = 0 ] || sleep "$s"
done
EOF
cat >"$bin/writer" <<'EOF'
#!/bin/sh
# writer --volume DIR NAME TEXT: DIR/runs/NAME = TEXT + the secret's value; checks HOME is writable
[ "$1" = --volume ] || exit 2
mkdir -p "$2/runs" && echo "$4 key=${S3_KEY:-unset}" >"$2/runs/$3" && touch "$HOME/.probe" && echo "wrote runs/$3"
EOF
cat >"$bin/reader" <<'EOF'
#!/bin/sh
# reader --volume DIR NAME: prints DIR/runs/NAME, exit 3 when it is missing
[ "$1" = --volume ] || exit 2
[ -f "$2/runs/$3" ] || { echo "missing runs/$3" >&2; exit 3; }
cat "$2/runs/$3"
EOF
cat >"$bin/exiter" <<'EOF'
#!/bin/sh
echo "exiting with $1"; exit "$1"
EOF
cat >"$bin/shard" <<'EOF'
#!/bin/sh
echo "shard $JOB_COMPLETION_INDEX of $1 in pod $POD_NAME"; sleep 3
EOF
cat >"$bin/sleeper" <<'EOF'
#!/bin/sh
# sleeper DIR: records its pid and a child's pid in DIR, then waits forever
echo $$ >"$1/sleeper.pid"; sleep 100000 & echo $! >"$1/child.pid"; echo started; wait
EOF
chmod +x "$bin"/*

# ---- up ---------------------------------------------------------------------------------------------
t0=$(date +%s.%N)
"$here/up.sh" "$dir" "$bin" >"$dir/up.out"
up=true
t1=$(date +%s.%N)
echo "cluster up in $(python3 -c "print(round($t1 - $t0, 1))")s: $(cat "$dir/up.out")"
ns=kubestyle
k apply -k "$repo/manifests/base" >/dev/null

# A Job shaped like pipeline/src/render.rs's (restricted pod security, emptyDir /tmp, PVC /data).
job() { # NAME COMMAND ARGS_JSON [extra container yaml] [extra pod yaml] [extra job spec yaml]
  cat <<EOF
apiVersion: batch/v1
kind: Job
metadata: {name: $1, namespace: $ns}
spec:
  backoffLimit: 0
  podFailurePolicy:
    rules:
    - {action: FailJob, onExitCodes: {containerName: main, operator: In, values: [2, 3, 4]}}
    - {action: Ignore, onPodConditions: [{type: DisruptionTarget, status: "True"}]}
${6:-}
  template:
    spec:
      restartPolicy: Never
      serviceAccountName: kubestyle
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 5
      securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, fsGroup: 65532, seccompProfile: {type: RuntimeDefault}}
${5:-}
      containers:
      - name: main
        image: ghcr.io/kubestyle/nothing:0
        command: [$2]
        args: $3
        env: [{name: HOME, value: /tmp}]
${4:-}
        securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}, readOnlyRootFilesystem: true, runAsNonRoot: true}
        volumeMounts: [{name: data, mountPath: /data}, {name: tmp, mountPath: /tmp}]
      volumes:
      - {name: data, persistentVolumeClaim: {claimName: smoke-volume}}
      - {name: tmp, emptyDir: {sizeLimit: 1Gi}}
EOF
}

# 1. PVC binds (the kubelet pre-binds a hostPath PV)
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: smoke-volume, namespace: $ns}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 20Gi}}}
EOF
k -n $ns wait --for=jsonpath='{.status.phase}'=Bound pvc/smoke-volume --timeout=60s >/dev/null &&
  pass "PVC bound to $(k -n $ns get pvc smoke-volume -o jsonpath='{.spec.volumeName}')" || fail "PVC not bound"

# 2. a Job completes; kubectl logs through the apiserver; tail
job echo echoer '["4"]' | k apply -f - >/dev/null
k -n $ns wait --for=condition=Complete job/echo --timeout=60s >/dev/null && pass "Job echo Complete" || fail "Job echo not Complete"
check "kubectl logs" "line 1|line 2|line 3|line 4" "$(k -n $ns logs job/echo | paste -sd'|')"
check "kubectl logs --tail=2" "line 3|line 4" "$(k -n $ns logs job/echo --tail=2 | paste -sd'|')"

# 3. kubectl logs -f streams while the process runs and ends with it
job follow echoer '["5", "1"]' | k apply -f - >/dev/null
k -n $ns wait --for=jsonpath='{.status.phase}'=Running pod -l job-name=follow --timeout=60s >/dev/null
k -n $ns logs -f job/follow | while IFS= read -r l; do echo "$(date +%s.%N) $l"; done >"$dir/follow.out"
first=$(head -1 "$dir/follow.out" | cut -d' ' -f1)
last=$(tail -1 "$dir/follow.out" | cut -d' ' -f1)
check "kubectl logs -f: all lines" "line 1|line 2|line 3|line 4|line 5" "$(cut -d' ' -f2- "$dir/follow.out" | paste -sd'|')"
if python3 -c "import sys; sys.exit(0 if $last - $first >= 2.5 else 1)"; then
  pass "kubectl logs -f: lines arrived live (first to last: $(python3 -c "print(round($last - $first, 1))")s)"
else
  fail "kubectl logs -f: lines did not arrive over time ($first .. $last)"
fi

# 4. exit code 3 -> terminated exitCode 3, podFailurePolicy FailJob
job fail exiter '["3"]' | k apply -f - >/dev/null
k -n $ns wait --for=condition=Failed job/fail --timeout=60s >/dev/null || true
check "failing pod: terminated exitCode/reason" "3/Error" \
  "$(k -n $ns get pods -l job-name=fail -o jsonpath='{.items[0].status.containerStatuses[0].state.terminated.exitCode}/{.items[0].status.containerStatuses[0].state.terminated.reason}')"
check "podFailurePolicy FailJob" "PodFailurePolicy" \
  "$(k -n $ns get job fail -o jsonpath='{.status.conditions[?(@.type=="Failed")].reason}')"

# 5. Indexed Job, 2 completions, parallelism 2, GPU node selector: unschedulable until the node
#    has the label, then JOB_COMPLETION_INDEX 0 and 1, running at the same time
job shard shard '["2"]' \
  "        resources: {limits: {nvidia.com/gpu: \"1\"}}
        envFrom: []" \
  "      nodeSelector: {nvidia.com/gpu.present: \"true\"}
      tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]" \
  "  completionMode: Indexed
  completions: 2
  parallelism: 2" |
  sed 's/env: \[{name: HOME, value: \/tmp}\]/env: [{name: HOME, value: \/tmp}, {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]/' |
  k apply -f - >/dev/null
sleep 3
check "GPU selector unmatched: pods Pending unscheduled" "Pending Pending" \
  "$(k -n $ns get pods -l job-name=shard -o jsonpath='{.items[*].status.phase}')"
k label node process-node-1 nvidia.com/gpu.present=true >/dev/null
k -n $ns wait --for=condition=Complete job/shard --timeout=60s >/dev/null && pass "Indexed Job Complete" || fail "Indexed Job not Complete"
check "JOB_COMPLETION_INDEX 0 and 1" "shard 0 of 2|shard 1 of 2" \
  "$(for i in 0 1; do k -n $ns logs "$(k -n $ns get pods -l job-name=shard,batch.kubernetes.io/job-completion-index=$i -o name)" | cut -d' ' -f1-4; done | paste -sd'|')"
if k -n $ns get pods -l job-name=shard -o json | python3 -c '
import json, sys
t = [c["state"]["terminated"] for p in json.load(sys.stdin)["items"] for c in p["status"]["containerStatuses"]]
sys.exit(0 if max(x["startedAt"] for x in t) < min(x["finishedAt"] for x in t) else 1)'; then
  pass "the 2 shards ran concurrently"
else
  fail "the 2 shards did not overlap"
fi
k label node process-node-1 nvidia.com/gpu.present- >/dev/null

# 6. envFrom a missing Secret: CreateContainerConfigError, then it runs once the Secret exists;
#    it writes to the claim
job write writer '["--volume", "/data", "hello.txt", "from-write"]' \
  "        envFrom: [{secretRef: {name: kubestyle-s3, optional: false}}]" | k apply -f - >/dev/null
k -n $ns wait --for=jsonpath='{.status.containerStatuses[0].state.waiting.reason}'=CreateContainerConfigError \
  pod -l job-name=write --timeout=60s >/dev/null || true
check "missing Secret: waiting reason/message, phase" 'CreateContainerConfigError/secret "kubestyle-s3" not found/Pending' \
  "$(k -n $ns get pods -l job-name=write -o jsonpath='{.items[0].status.containerStatuses[0].state.waiting.reason}/{.items[0].status.containerStatuses[0].state.waiting.message}/{.items[0].status.phase}')"
k -n $ns create secret generic kubestyle-s3 --from-literal=S3_KEY=k3y >/dev/null
k -n $ns wait --for=condition=Complete job/write --timeout=60s >/dev/null && pass "Job write Complete after the Secret was created" || fail "Job write not Complete"

# 7. a second Job sees the first one's file on the same claim
job read reader '["--volume", "/data", "hello.txt"]' | k apply -f - >/dev/null
k -n $ns wait --for=condition=Complete job/read --timeout=60s >/dev/null || true
check "second Job reads the first one's file (and the Secret's value)" "from-write key=k3y" "$(k -n $ns logs job/read)"

# 8. deleting a running pod kills its process group
job sleep sleeper '["/data"]' | k apply -f - >/dev/null
k -n $ns wait --for=condition=Ready pod -l job-name=sleep --timeout=60s >/dev/null
pvdir=$dir/kubelet/pv/$ns-smoke-volume
for _ in $(seq 50); do [ -s "$pvdir/child.pid" ] && break; sleep 0.1; done
sp=$(cat "$pvdir/sleeper.pid")
cp=$(cat "$pvdir/child.pid")
kill -0 "$sp" && kill -0 "$cp" && pass "sleeper running (pid $sp, child $cp)" || fail "sleeper not running"
k -n $ns delete pod -l job-name=sleep --wait=true >/dev/null
alive() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${st#Z}" = "$st" ]; } # zombies are dead
if alive "$sp" || alive "$cp"; then fail "processes still alive after pod deletion"; else pass "pod deleted: process and child gone"; fi

# ---- down -------------------------------------------------------------------------------------------
t0=$(date +%s.%N)
"$here/down.sh" "$dir" 2>/dev/null
up=false
t1=$(date +%s.%N)
echo "cluster down in $(python3 -c "print(round($t1 - $t0, 1))")s"
sleep 1
left=$(ps -e -o pid=,stat=,args= | grep -F -e "$dir" -e "$bin" | grep -v -e grep -e smoke.sh -e ' Z' || true)
if [ -z "$left" ]; then pass "no process left"; else fail "processes left: $left"; fi

if [ $fails -eq 0 ]; then
  echo "smoke: all checks passed"
  [ $# -ge 1 ] || rm -rf "$dir"
else
  echo "smoke: $fails check(s) failed; logs in $dir/logs"
  exit 1
fi
