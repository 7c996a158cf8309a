#!/usr/bin/env python3
"""process-kubelet: a test-harness kubelet that runs each container's command as a local process.
Standard library only (plus the openssl command line, for its serving certificate).

Grown from ../shared/tools/stand-in-kubelet.py (which only pretends to run pods). For a real local
control plane (tests/cluster/control-plane.sh) it:

  * registers a Node (default "process-node-1": InternalIP 127.0.0.1, large cpu/memory/pods, and
    `nvidia.com/gpu` allocatable; labels from --node-label k=v, taints from --node-taint), keeps its
    Ready condition and its Lease in kube-node-lease fresh, and publishes its log server port as
    status.daemonEndpoints.kubeletEndpoint.Port;
  * runs every pod the scheduler binds to that node: per container, command[0] is looked up in
    --bin-dir (the image is ignored; a command[0] not found there is a StartError, exit 128), the rest
    of command + args are the arguments; init containers one after another, then all containers at
    once; the process gets its own process group, a clean environment (PATH = --bin-dir + the system
    PATH, HOSTNAME = the pod name, then envFrom and env like a kubelet, with $(VAR) expansion), cwd =
    a per-pod directory, stdin /dev/null, stdout and stderr to <data-dir>/pods/<ns>_<pod>_<uid>/logs/
    <container>.log;
  * volumes: a persistentVolumeClaim is the host directory of the PV bound to the claim, an emptyDir
    a fresh per-pod directory, a hostPath itself, secret and configMap volumes are written out as
    files, anything else an empty per-pod directory. Every container mount path that prefixes an
    argument or an env value (`/data`, `/data/runs/x`, `--volume=/data`, HOME=/tmp) is rewritten to
    the host directory (longest mount path first; subPath honoured);
    stdout and stderr share one pipe so their order in the log is the order written
    (--split-streams: two pipes, for the `stream` log parameter, order between them not kept);
  * env: value, valueFrom.fieldRef (metadata.name/namespace/uid, metadata.labels['k'],
    metadata.annotations['k'] — the Job controller's JOB_COMPLETION_INDEX —, spec.nodeName,
    spec.serviceAccountName, status.hostIP/podIP), secretKeyRef, configMapKeyRef, envFrom
    secretRef/configMapRef (with prefix), read through the API. A missing Secret/ConfigMap (not
    optional) or key leaves the pod Pending with the container waiting, reason
    CreateContainerConfigError and the kubelet's message (`secret "NAME" not found`, `couldn't find
    key K in Secret NS/NAME`); retried every --config-retry seconds, the container starts once it
    appears;
  * status like a kubelet: Pending/ContainerCreating, Running while the process runs (startTime,
    containerStatuses running + ready, Ready/ContainersReady/Initialized conditions, podIP
    127.0.0.1), then Succeeded or Failed with state.terminated.exitCode = the real exit code (a
    signal n gives 128+n) and reason Completed/Error, so Job podFailurePolicy, backoffLimit,
    Indexed completions, TTL and the garbage collector act for real. Pod-level
    activeDeadlineSeconds is enforced (reason DeadlineExceeded);
  * a pod being deleted (deletionTimestamp): SIGTERM to each container's process group, SIGKILL
    after the pod's deletion grace period, status terminated, then the pod is removed (grace 0);
    a pod that vanished from the API is killed at once; when a container's main process exits,
    whatever is left of its process group is killed (like a container's PID 1);
  * serves container logs for `kubectl logs` through the apiserver: HTTPS on 127.0.0.1:<free port>
    (a self-signed certificate made with openssl at start, or --tls-cert/--tls-key; the apiserver
    does not verify it unless given --kubelet-certificate-authority), GET
    /containerLogs/<ns>/<pod>/<container> with follow, tailLines, limitBytes, timestamps,
    sinceSeconds, sinceTime, stream (All/Stdout/Stderr); 404 for an unknown pod or container, 400
    "is waiting to start: REASON" before the container ran. With --client-ca-file only clients with
    a certificate from that CA (the apiserver's kubelet client cert) are let in;
  * (unless --no-pv) creates a pre-bound hostPath PersistentVolume <data-dir>/pv/<ns>-<claim>/ (made
    on disk) for every Pending PVC without one; when a claim is deleted, the Released PV and its
    directory are deleted;
  * pods are bound by kube-scheduler (so nodeSelector/taints/GPU requests are really checked);
    --bind-after S makes this kubelet also bind pods left unscheduled for S seconds whose
    nodeSelector matches its labels (for a control plane without a scheduler).

Scripted exit code, an override only when present (the process still runs; its own code is replaced):
  1. pod annotation  process-kubelet/exit-code: "<int>"  (or the stand-in's  fake-kubelet/exit-code)
  2. --rule 'REGEX=CODE' or 'REGEX=CODExN' (repeatable) matched (re.search) against
     "<namespace>/<pod-name>" and the batch.kubernetes.io/job-name label; xN: the first N pods only.

Not a kubelet: no images, no isolation (no namespaces, cgroups, seccomp, read-only root, users:
everything runs as the user running this script), no resource limits, no probes, no restarts
(restartPolicy is treated as Never), no exec/attach/port-forward, no sidecar init containers, no
service-account token files, no service env vars, no resourceFieldRef, no events.

Usage:  python3 tests/cluster/process-kubelet.py --kubeconfig DIR/kubelet.kubeconfig \
            --bin-dir /var/tmp/kubestyle-ci-target/debug --data-dir DIR/kubelet \
            [--client-ca-file DIR/pki/ca.crt] [--node-label nvidia.com/gpu.present=true] ...
        (runs until SIGINT/SIGTERM, which kill every process it started; one log line per action)
"""
import argparse
import base64
import datetime as dt
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse

ANN_EXIT = ("process-kubelet/exit-code", "fake-kubelet/exit-code")
NODE_IP = "127.0.0.1"


def now():
    return dt.datetime.now(dt.timezone.utc)


def ts(t=None):
    return (t or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_ts(t=None):
    return (t or now()).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def nano_ts(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def parse_ts(s):
    s = s.strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", s)
    if m and m.group(2):  # Python wants at most 6 fractional digits
        s = m.group(1) + m.group(2)[:7] + m.group(3)
    t = dt.datetime.fromisoformat(s)
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


_log_lock = threading.Lock()


def log(msg):
    with _log_lock:
        print(f"{ts()} {msg}", flush=True)


class ApiError(Exception):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


class Client:
    """Minimal HTTPS client for the Kubernetes API (kubeconfig with embedded or file-referenced certs).
    One connection per thread."""

    def __init__(self, kubeconfig, statedir):
        text = open(kubeconfig).read()

        def field(key):
            m = re.search(r"^\s*" + re.escape(key) + r":\s*(\S+)\s*$", text, re.M)
            return m.group(1).strip("'\"") if m else None

        server = field("server")
        if not server:
            sys.exit(f"no server: in {kubeconfig}")
        u = urllib.parse.urlparse(server)
        self.host, self.port = u.hostname, u.port or 443
        os.makedirs(statedir, exist_ok=True)

        def material(key_data, key_file, name):
            d = field(key_data)
            if d:
                p = os.path.join(statedir, f"client-{name}.pem")
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(base64.b64decode(d))
                return p
            return field(key_file)

        ca = material("certificate-authority-data", "certificate-authority", "ca")
        cert = material("client-certificate-data", "client-certificate", "cert")
        key = material("client-key-data", "client-key", "key")
        token = field("token")
        self.ctx = ssl.create_default_context(cafile=ca) if ca else ssl._create_unverified_context()
        if cert and key:
            self.ctx.load_cert_chain(cert, key)
        self.headers = {"Accept": "application/json"}
        if token:
            self.headers["Authorization"] = "Bearer " + token
        self.local = threading.local()

    def req(self, method, path, body=None, ctype="application/json", ok404=False):
        data = json.dumps(body).encode() if body is not None else None
        h = dict(self.headers)
        if data is not None:
            h["Content-Type"] = ctype
        for attempt in range(3):
            try:
                conn = getattr(self.local, "conn", None)
                if conn is None:
                    conn = self.local.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx,
                                                                         timeout=30)
                conn.request(method, path, body=data, headers=h)
                r = conn.getresponse()
                raw = r.read()
                break
            except (OSError, http.client.HTTPException):
                self.local.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.5)
        if r.status == 404 and ok404:
            return None
        if r.status >= 300:
            raise ApiError(r.status, raw.decode(errors="replace"))
        return json.loads(raw) if raw else {}

    def get(self, path, **kw):
        return self.req("GET", path, **kw)

    def post(self, path, body):
        return self.req("POST", path, body)

    def patch(self, path, body, kind="strategic-merge-patch"):
        return self.req("PATCH", path, body, ctype=f"application/{kind}+json")

    def delete(self, path, body=None):
        return self.req("DELETE", path, body, ok404=True)


def pod_path(pod):
    return f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods/{pod['metadata']['name']}"


def pod_key(pod):
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


class ConfigError(Exception):
    """The kubelet's CreateContainerConfigError: retried until the Secret/ConfigMap/key appears."""


class NotReady(Exception):
    """A volume cannot be set up yet (claim unbound, ...): retried, pod stays ContainerCreating."""


# ---- container logs ------------------------------------------------------------------------------
class ContainerLog:
    """A container's output: the raw bytes appended to a file, plus an in-memory index of its lines
    (timestamp, stream, offset, length) for tailLines/timestamps/since/stream and for followers."""

    def __init__(self, path):
        self.path = path
        self.wf = open(path, "ab")
        self.rfd = os.open(path, os.O_RDONLY)
        self.offset = self.wf.tell()
        self.entries = []  # (datetime, stream, offset, length)
        self.cond = threading.Condition()
        self.done = False

    def append(self, stream, data):
        with self.cond:
            self.wf.write(data)
            self.wf.flush()
            self.entries.append((now(), stream, self.offset, len(data)))
            self.offset += len(data)
            self.cond.notify_all()

    def read(self, offset, length):
        return os.pread(self.rfd, length, offset)

    def close(self):
        with self.cond:
            self.done = True
            try:
                self.wf.close()
            except OSError:
                pass
            self.cond.notify_all()

    def pump(self, fd, stream):
        """Copy a pipe into the log, line by line (a partial line waits for its newline, 64 KiB, or EOF)."""
        buf = b""
        try:
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                buf += chunk
                while True:
                    i = buf.find(b"\n")
                    if i < 0:
                        break
                    self.append(stream, buf[:i + 1])
                    buf = buf[i + 1:]
                if len(buf) >= 65536:
                    self.append(stream, buf)
                    buf = b""
            if buf:
                self.append(stream, buf)
        finally:
            os.close(fd)


# ---- one container's process ---------------------------------------------------------------------
class Proc:
    def __init__(self, name, popen, log_, readers):
        self.name = name
        self.popen = popen
        self.log = log_
        self.readers = readers
        self.started = now()
        self.finished = None
        self.code = None
        self.term_sent = None
        self.killed = False

    def signal_group(self, sig):
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def poll(self):
        if self.code is not None:
            return self.code
        rc = self.popen.poll()
        if rc is None:
            return None
        # the main process is gone: like a container's PID 1, take the rest of its group with it
        self.signal_group(signal.SIGKILL)
        for t in self.readers:
            t.join(timeout=5)
        self.log.close()
        self.code = 128 - rc if rc < 0 else rc
        self.finished = now()
        return self.code


# ---- one pod ---------------------------------------------------------------------------------------
class PodWorker(threading.Thread):
    def __init__(self, kubelet, pod):
        super().__init__(daemon=True, name="pod-" + pod_key(pod))
        self.k = kubelet
        self.c = kubelet.c
        self.pod = pod
        self.uid = pod["metadata"]["uid"]
        self.key = pod_key(pod)
        self.wake = threading.Event()
        self.kill_grace = None  # set: the pod must be terminated within this many seconds
        self.kill_why = ""
        self.finished = False
        self.logs = {}  # container name -> ContainerLog
        self.waiting = {}  # container name -> (reason, message) while it has not run
        self.root = os.path.join(kubelet.a.data_dir, "pods",
                                 f"{pod['metadata']['namespace']}_{pod['metadata']['name']}_{self.uid}")
        self.start_time = None
        self.cstate = {}  # container name -> status dict (terminated/running) once it ran
        self.last_waiting_patch = None

    # -- control from the main thread --
    def request_kill(self, grace, why):
        if self.kill_grace is None or grace < self.kill_grace:
            self.kill_grace = max(0.0, float(grace))
            self.kill_why = why
        self.wake.set()

    def all_containers(self):
        sp = self.pod["spec"]
        return list(sp.get("initContainers") or []) + list(sp.get("containers") or [])

    # -- status --
    def conds(self, phase, t, init_done, ready, not_ready_names):
        def c(typ, st, reason=None, msg=None, at=t):
            d = {"type": typ, "status": st, "lastProbeTime": None, "lastTransitionTime": at}
            if reason:
                d["reason"] = reason
            if msg:
                d["message"] = msg
            return d
        term = phase in ("Succeeded", "Failed")
        if ready:
            rd = [c("Ready", "True"), c("ContainersReady", "True")]
        else:
            reason = "PodCompleted" if term else "ContainersNotReady"
            msg = None if term else f"containers with unready status: [{' '.join(not_ready_names)}]"
            rd = [c("Ready", "False", reason, msg), c("ContainersReady", "False", reason, msg)]
        pending_inits = [x["name"] for x in self.pod["spec"].get("initContainers") or []
                         if self.cstate.get(x["name"], {}).get("state", {}).get("terminated", {}).get("exitCode") != 0]
        init = c("Initialized", "True", "PodCompleted" if term else None) if init_done else \
            c("Initialized", "False", "ContainersNotInitialized",
              f"containers with incomplete status: [{' '.join(pending_inits)}]")
        scheduled = self.pod["status"].get("startTime") or self.start_time or t
        return [c("PodReadyToStartContainers", "False" if term else "True"), init] + rd + \
            [c("PodScheduled", "True", at=scheduled)]

    def cstatus(self, c, state, ready=False, started=False, pid=None):
        d = {"name": c["name"], "image": c.get("image", ""), "imageID": "", "state": state, "lastState": {},
             "ready": ready, "started": started, "restartCount": 0}
        if pid is not None:
            d["containerID"] = f"process://{self.k.a.node}/{pid}"
            d["imageID"] = "process://" + c.get("image", "")
        return d

    def status_of(self, c):
        name = c["name"]
        if name in self.cstate:
            return self.cstate[name]
        reason, msg = self.waiting.get(name, ("PodInitializing", None))
        w = {"reason": reason}
        if msg:
            w["message"] = msg
        return self.cstatus(c, {"waiting": w})

    def patch_status(self, phase, extra=None):
        sp = self.pod["spec"]
        t = ts()
        inits, apps = sp.get("initContainers") or [], sp.get("containers") or []
        init_done = all(self.cstate.get(c["name"], {}).get("state", {}).get("terminated", {}).get("exitCode") == 0
                        for c in inits)
        app_st = [self.status_of(c) for c in apps]
        ready = phase == "Running" and all(s["ready"] for s in app_st)
        not_ready = [s["name"] for s in app_st if not s["ready"]]
        st = {"phase": phase, "hostIP": NODE_IP, "hostIPs": [{"ip": NODE_IP}],
              "conditions": self.conds(phase, t, init_done, ready, not_ready), "containerStatuses": app_st}
        if self.start_time:
            st["startTime"] = self.start_time
            st["podIP"] = NODE_IP
            st["podIPs"] = [{"ip": NODE_IP}]
        if inits:
            st["initContainerStatuses"] = [self.status_of(c) for c in inits]
        if extra:
            st.update(extra)
        # A terminal status must arrive (else the pod looks Running for ever): retried for up to a
        # minute; intermediate ones are simply superseded by the next.
        tries = 120 if phase in ("Succeeded", "Failed") else 1
        for i in range(tries):
            try:
                self.c.patch(pod_path(self.pod) + "/status", {"status": st})
                return
            except ApiError as e:
                if e.status == 404:
                    return
                err = e
            except (OSError, http.client.HTTPException) as e:
                err = e
            if i == 0:
                log(f"pod {self.key}: status patch ({phase}): {err}" + (" (retrying)" if tries > 1 else ""))
            if i + 1 < tries:
                time.sleep(0.5)

    def set_waiting(self, names, reason, message):
        for n in names:
            self.waiting[n] = (reason, message)
        sig = (tuple(names), reason, message)
        if sig != self.last_waiting_patch:
            self.last_waiting_patch = sig
            self.patch_status("Pending")
            log(f"pod {self.key} Pending: {reason}" + (f": {message}" if message else ""))

    # -- API objects --
    def get_obj(self, kind, name, optional):
        ns = self.pod["metadata"]["namespace"]
        res = "secrets" if kind == "secret" else "configmaps"
        obj = self.c.get(f"/api/v1/namespaces/{ns}/{res}/{name}", ok404=True)
        if obj is None:
            if optional:
                return None
            raise ConfigError(f'{kind} "{name}" not found')
        data = {}
        if kind == "secret":
            for k, v in (obj.get("data") or {}).items():
                data[k] = base64.b64decode(v)
        else:
            for k, v in (obj.get("data") or {}).items():
                data[k] = v.encode()
            for k, v in (obj.get("binaryData") or {}).items():
                data[k] = base64.b64decode(v)
        return data

    def field_ref(self, path):
        md, sp = self.pod["metadata"], self.pod["spec"]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.*)'\]", path)
        if m:
            return (md.get(m.group(1)) or {}).get(m.group(2), "")
        simple = {"metadata.name": md["name"], "metadata.namespace": md["namespace"], "metadata.uid": md["uid"],
                  "spec.nodeName": sp.get("nodeName", ""), "spec.serviceAccountName": sp.get("serviceAccountName", ""),
                  "status.hostIP": NODE_IP, "status.hostIPs": NODE_IP, "status.podIP": NODE_IP,
                  "status.podIPs": NODE_IP}
        if path in simple:
            return simple[path]
        if path == "metadata.labels":
            return "\n".join(f'{k}="{v}"' for k, v in sorted((md.get("labels") or {}).items()))
        if path == "metadata.annotations":
            return "\n".join(f'{k}="{v}"' for k, v in sorted((md.get("annotations") or {}).items()))
        log(f"pod {self.key}: fieldRef {path!r} not supported, empty")
        return ""

    @staticmethod
    def expand(s, env):
        """Kubernetes $(VAR) expansion: defined vars are replaced, $$ is a literal $, others stay."""
        out, i = [], 0
        while i < len(s):
            if s.startswith("$$", i):
                out.append("$")
                i += 2
            elif s.startswith("$(", i):
                j = s.find(")", i + 2)
                if j < 0:
                    out.append(s[i:])
                    break
                name = s[i + 2:j]
                out.append(env[name] if name in env else s[i:j + 1])
                i = j + 1
            else:
                out.append(s[i])
                i += 1
        return "".join(out)

    def resolve_env(self, c):
        env = {}
        for ef in c.get("envFrom") or []:
            prefix = ef.get("prefix", "")
            for kind, ref in (("secret", ef.get("secretRef")), ("configmap", ef.get("configMapRef"))):
                if ref is None:
                    continue
                data = self.get_obj(kind, ref["name"], ref.get("optional", False))
                for k, v in (data or {}).items():
                    name = prefix + k
                    if re.fullmatch(r"[-._a-zA-Z][-._a-zA-Z0-9]*", name):
                        env[name] = v.decode(errors="surrogateescape")
        ns = self.pod["metadata"]["namespace"]
        for e in c.get("env") or []:
            name = e["name"]
            if "value" in e or "valueFrom" not in e:
                env[name] = self.expand(e.get("value", ""), env)
                continue
            vf = e["valueFrom"]
            if "fieldRef" in vf:
                env[name] = self.field_ref(vf["fieldRef"]["fieldPath"])
            elif "secretKeyRef" in vf or "configMapKeyRef" in vf:
                kind, ref = ("secret", vf["secretKeyRef"]) if "secretKeyRef" in vf else \
                    ("configmap", vf["configMapKeyRef"])
                opt = ref.get("optional", False)
                data = self.get_obj(kind, ref["name"], opt)
                if data is None:
                    continue
                if ref["key"] not in data:
                    if opt:
                        continue
                    label = "Secret" if kind == "secret" else "ConfigMap"
                    raise ConfigError(f"couldn't find key {ref['key']} in {label} {ns}/{ref['name']}")
                env[name] = data[ref["key"]].decode(errors="surrogateescape")
            else:
                log(f"pod {self.key}: env {name}: {list(vf)} not supported, empty")
                env[name] = ""
        return env

    # -- volumes --
    def setup_volumes(self):
        """volume name -> host directory (or None when the volume cannot be had: NotReady)."""
        ns = self.pod["metadata"]["namespace"]
        out = {}
        for v in self.pod["spec"].get("volumes") or []:
            name = v["name"]
            vdir = os.path.join(self.root, "volumes", name)
            if "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                pvc = self.c.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{claim}", ok404=True)
                if pvc is None:
                    raise NotReady(f'persistentvolumeclaim "{claim}" not found')
                vol = pvc["spec"].get("volumeName")
                if not vol or pvc.get("status", {}).get("phase") != "Bound":
                    raise NotReady(f'persistentvolumeclaim "{claim}" is not bound')
                pv = self.c.get(f"/api/v1/persistentvolumes/{vol}", ok404=True)
                if pv is None:
                    raise NotReady(f'persistentvolume "{vol}" not found')
                path = (pv["spec"].get("hostPath") or pv["spec"].get("local") or {}).get("path")
                if not path:
                    raise NotReady(f"persistentvolume {vol} has neither hostPath nor local path")
                os.makedirs(path, exist_ok=True)
                out[name] = path
            elif "hostPath" in v:
                path = v["hostPath"]["path"]
                if v["hostPath"].get("type") == "DirectoryOrCreate":
                    os.makedirs(path, exist_ok=True)
                out[name] = path
            elif "secret" in v or "configMap" in v:
                kind, src = ("secret", v["secret"]) if "secret" in v else ("configmap", v["configMap"])
                ref = src.get("secretName") if kind == "secret" else src.get("name")
                try:
                    data = self.get_obj(kind, ref, src.get("optional", False)) or {}
                except ConfigError as e:
                    raise NotReady(f'MountVolume.SetUp failed for volume "{name}" : {e}')
                os.makedirs(vdir, exist_ok=True)
                items = src.get("items") or [{"key": k, "path": k} for k in data]
                for it in items:
                    if it["key"] in data:
                        p = os.path.join(vdir, it["path"])
                        os.makedirs(os.path.dirname(p), exist_ok=True)
                        with open(p, "wb") as f:
                            f.write(data[it["key"]])
                        os.chmod(p, it.get("mode", src.get("defaultMode", 0o644)) & 0o777)
                out[name] = vdir
            else:
                if "emptyDir" not in v:
                    log(f"pod {self.key}: volume {name}: {sorted(set(v) - {'name'})} not supported, an empty directory")
                os.makedirs(vdir, exist_ok=True)
                out[name] = vdir
        return out

    @staticmethod
    def rewriter(mounts):
        """mounts: [(container path, host path)] -> function rewriting an arg or env value."""
        mounts = sorted(((m.rstrip("/"), h) for m, h in mounts if m.rstrip("/")), key=lambda x: -len(x[0]))

        def rw_path(s):
            for m, h in mounts:
                if s == m or s.startswith(m + "/"):
                    return h + s[len(m):]
            return s

        def rw(s):
            r = rw_path(s)
            if r != s:
                return r
            if s.startswith("-") and "=" in s:
                k, _, v = s.partition("=")
                return k + "=" + rw_path(v)
            return s
        return rw

    # -- running --
    def prepare(self, c, volumes):
        """-> (argv, env, cwd) for container c; raises ConfigError/NotReady; argv None = StartError msg."""
        mounts = []
        for vm in c.get("volumeMounts") or []:
            host = volumes.get(vm["name"])
            if host is None:
                continue
            if vm.get("subPath"):
                host = os.path.join(host, vm["subPath"])
                os.makedirs(host, exist_ok=True)
            mounts.append((vm["mountPath"], host))
        rw = self.rewriter(mounts)
        env = self.resolve_env(c)
        base = {"PATH": self.k.a.bin_dir + ":" + self.k.a.path, "HOSTNAME": self.pod["metadata"]["name"]}
        base.update(self.k.extra_env)
        base.update(env)
        env = {k: rw(v) for k, v in base.items()}
        cmd = [self.expand(x, env) for x in (c.get("command") or [])]
        args = [self.expand(x, env) for x in (c.get("args") or [])]
        cwd = os.path.join(self.root, "cwd")
        if c.get("workingDir"):
            wd = rw(c["workingDir"])
            cwd = wd if wd != c["workingDir"] else os.path.join(cwd, c["workingDir"].lstrip("/"))
        os.makedirs(cwd, exist_ok=True)
        if not cmd:
            return None, "no command: the process kubelet has no images, so a container needs `command`", cwd
        exe = cmd[0]
        host = rw(exe)
        if host != exe:  # a program on a volume
            path = host
        else:
            path = os.path.join(self.k.a.bin_dir, os.path.basename(exe))
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return None, (f'exec: "{exe}": executable file not found in $PATH '
                          f'(process-kubelet --bin-dir {self.k.a.bin_dir})'), cwd
        return [path] + [rw(a) for a in cmd[1:]] + [rw(a) for a in args], env, cwd

    def launch(self, c, argv, env, cwd):
        logdir = os.path.join(self.root, "logs")
        os.makedirs(logdir, exist_ok=True)
        lg = ContainerLog(os.path.join(logdir, c["name"] + ".log"))
        # One pipe for stdout and stderr keeps their order exactly as written (default); two pipes
        # (--split-streams) let `stream=Stdout|Stderr` work but, like a real runtime, do not keep
        # the order between the two.
        pipes = [os.pipe()] + ([os.pipe()] if self.k.a.split_streams else [])
        out_w = pipes[0][1]
        err_w = pipes[1][1] if self.k.a.split_streams else out_w
        try:
            p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w,
                                 start_new_session=True, close_fds=True)
        except OSError as e:
            for r, w in pipes:
                os.close(r)
                os.close(w)
            lg.close()
            self.logs[c["name"]] = lg
            return None, str(e)
        for _, w in pipes:
            os.close(w)
        readers = [threading.Thread(target=lg.pump, args=(r, stream), daemon=True)
                   for (r, _), stream in zip(pipes, ("stdout", "stderr"))]
        for t in readers:
            t.start()
        self.logs[c["name"]] = lg
        self.k.register_pgid(p.pid)
        log(f"pod {self.key} container {c['name']} started: pid {p.pid}: {' '.join(argv)}")
        return Proc(c["name"], p, lg, readers), None

    def terminated(self, c, code, started, finished, reason=None, message=None, pid=None):
        term = {"exitCode": code, "reason": reason or ("Completed" if code == 0 else "Error"),
                "startedAt": ts(started), "finishedAt": ts(finished)}
        if message:
            term["message"] = message
        self.cstate[c["name"]] = self.cstatus(c, {"terminated": term}, pid=pid)

    def override_code(self):
        md = self.pod["metadata"]
        ann = md.get("annotations") or {}
        for a in ANN_EXIT:
            if a in ann:
                return int(ann[a])
        return self.k.rule_code(self.pod)

    def run_group(self, containers, volumes, is_init):
        """Start containers (together) and wait for them. -> True when all exited 0."""
        procs = []
        for c in containers:
            argv, env, cwd = self.prepare(c, volumes)
            if argv is None:
                t = now()
                self.terminated(c, 128, t, t, "StartError", env)
                log(f"pod {self.key} container {c['name']}: StartError: {env}")
                continue
            p, err = self.launch(c, argv, env, cwd)
            if p is None:
                t = now()
                self.terminated(c, 128, t, t, "StartError", err)
                log(f"pod {self.key} container {c['name']}: StartError: {err}")
                continue
            p.spec = c
            procs.append(p)
            self.cstate[c["name"]] = self.cstatus(c, {"running": {"startedAt": ts(p.started)}},
                                                  ready=not is_init, started=True, pid=p.popen.pid)
        self.patch_status("Pending" if is_init else ("Running" if procs else "Pending"))
        if procs:
            log(f"pod {self.key} {'initializing' if is_init else 'Running'}")
        deadline = None
        ads = self.pod["spec"].get("activeDeadlineSeconds")
        if ads is not None:
            deadline = parse_ts(self.start_time).timestamp() + float(ads)
        live = list(procs)
        while live:
            changed = False
            for p in list(live):
                if p.poll() is not None:
                    live.remove(p)
                    self.k.unregister_pgid(p.popen.pid)
                    code, msg = p.code, None
                    if not p.killed and not is_init and p.spec is self.pod["spec"]["containers"][0]:
                        ov = self.override_code()
                        if ov is not None and ov != code:
                            msg = f"exit code {code} replaced by the scripted {ov}"
                            code = ov
                    self.terminated(p.spec, code, p.started, p.finished, message=msg, pid=p.popen.pid)
                    log(f"pod {self.key} container {p.name} exited {code}" + (f" ({msg})" if msg else ""))
                    changed = True
            if not live:
                break
            if changed and not is_init:
                self.patch_status("Running")
            if deadline is not None and time.time() >= deadline and self.kill_grace is None:
                self.deadline_exceeded = True
                self.request_kill(float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)),
                                  "activeDeadlineSeconds")
            if self.kill_grace is not None:
                t = time.time()
                for p in live:
                    if p.term_sent is None:
                        p.term_sent = t
                        p.killed = True
                        p.signal_group(signal.SIGTERM)
                        log(f"pod {self.key} container {p.name}: SIGTERM ({self.kill_why}, grace {self.kill_grace:g}s)")
                    elif t - p.term_sent >= self.kill_grace:
                        p.signal_group(signal.SIGKILL)
            self.wake.wait(0.2)
            self.wake.clear()
        return all(self.cstate[c["name"]]["state"].get("terminated", {}).get("exitCode") == 0 for c in containers)

    def run(self):
        try:
            self.body()
        except Exception as e:  # noqa: keep the kubelet alive; report the pod failed
            log(f"pod {self.key}: internal error: {e}\n{traceback.format_exc()}")
            try:
                t = now()
                for c in self.all_containers():
                    if c["name"] not in self.cstate or "running" in self.cstate[c["name"]]["state"]:
                        self.terminated(c, 128, t, t, "StartError", f"process-kubelet: {e}")
                self.patch_status("Failed")
            except Exception:  # noqa
                pass
        finally:
            for lg in self.logs.values():
                if not lg.done:
                    lg.close()
            self.finished = True
            self.k.wake.set()

    def body(self):
        self.deadline_exceeded = False
        sp = self.pod["spec"]
        names = [c["name"] for c in self.all_containers()]
        os.makedirs(self.root, exist_ok=True)
        self.start_time = self.pod["status"].get("startTime") or ts()  # acknowledged by the kubelet
        self.set_waiting(names, "ContainerCreating", None)
        # set up volumes and check every container's config before starting anything (like a kubelet)
        while True:
            if self.kill_grace is not None:
                t = now()
                for c in self.all_containers():
                    self.terminated(c, 137, t, t, "ContainerStatusUnknown",
                                    "The container could not be located when the pod was terminated")
                self.patch_status("Failed")
                log(f"pod {self.key} Failed before it started ({self.kill_why})")
                return
            try:
                volumes = self.setup_volumes()
                first = (sp.get("initContainers") or sp["containers"])[0]
                try:
                    self.resolve_env(first)
                except ConfigError as e:
                    self.set_waiting([first["name"]], "CreateContainerConfigError", str(e))
                    raise
                break
            except ConfigError:
                pass
            except NotReady as e:
                self.set_waiting(names, "ContainerCreating", str(e))
            except (ApiError, OSError, http.client.HTTPException) as e:
                log(f"pod {self.key}: setup: {e}")
            self.wake.wait(self.k.a.config_retry)
            self.wake.clear()
        for c in sp.get("initContainers") or []:
            while True:  # an init container's own env may still be missing
                try:
                    self.resolve_env(c)
                    break
                except ConfigError as e:
                    self.set_waiting([c["name"]], "CreateContainerConfigError", str(e))
                if self.kill_grace is not None:
                    break
                self.wake.wait(self.k.a.config_retry)
                self.wake.clear()
            if self.kill_grace is not None or not self.run_group([c], volumes, True):
                return self.finish(failed=True)
        apps = sp["containers"]
        while self.kill_grace is None:
            missing = None
            for c in apps:
                try:
                    self.resolve_env(c)
                except ConfigError as e:
                    missing = (c["name"], str(e))
                    break
            if missing is None:
                break
            self.set_waiting([missing[0]], "CreateContainerConfigError", missing[1])
            self.wake.wait(self.k.a.config_retry)
            self.wake.clear()
        if self.kill_grace is not None:
            t = now()
            for c in apps:
                if c["name"] not in self.cstate:
                    self.terminated(c, 137, t, t, "ContainerStatusUnknown",
                                    "The container could not be located when the pod was terminated")
            return self.finish(failed=True)
        ok = self.run_group(apps, volumes, False)
        self.finish(failed=not ok)

    def finish(self, failed):
        t = now()
        for c in self.all_containers():
            if c["name"] not in self.cstate:
                self.terminated(c, 137, t, t, "ContainerStatusUnknown",
                                "The container could not be located when the pod was terminated")
        extra = None
        if self.deadline_exceeded:
            extra = {"reason": "DeadlineExceeded", "message": "Pod was active on the node longer than the specified deadline"}
            failed = True
        phase = "Failed" if failed else "Succeeded"
        self.patch_status(phase, extra)
        codes = {n: s["state"]["terminated"]["exitCode"] for n, s in self.cstate.items() if "terminated" in s["state"]}
        log(f"pod {self.key} {phase} {codes}")

    def cleanup(self):
        shutil.rmtree(os.path.join(self.root, "volumes"), ignore_errors=True)
        shutil.rmtree(os.path.join(self.root, "cwd"), ignore_errors=True)


# ---- log server ----------------------------------------------------------------------------------
class LogServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, ctx, kubelet):
        super().__init__(addr, handler)
        self.ctx = ctx
        self.kubelet = kubelet

    def finish_request(self, request, client_address):
        try:
            request.settimeout(15)
            request = self.ctx.wrap_socket(request, server_side=True)
            request.settimeout(None)
        except (ssl.SSLError, OSError) as e:
            log(f"log server: TLS handshake from {client_address[0]}: {e}")
            try:
                request.close()
            except OSError:
                pass
            return
        self.RequestHandlerClass(request, client_address, self)


def truthy(v):
    return v is not None and v.lower() in ("1", "true", "yes")


class LogHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "process-kubelet"

    def log_message(self, fmt, *args):
        if self.server.kubelet.a.verbose:
            log("log server: " + (fmt % args))

    def error(self, code, msg):
        body = msg.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def chunk(self, data):
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        parts = [urllib.parse.unquote(p) for p in u.path.split("/")]
        if u.path in ("/healthz", "/readyz", "/livez"):
            return self.error(200, "ok")
        if len(parts) != 5 or parts[1] != "containerLogs":
            return self.error(404, "404 page not found")
        _, _, ns, name, container = parts
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(u.query, keep_blank_values=True).items()}
        try:
            tail = int(q.get("tailLines", q.get("tail", "-1")) or -1)
            limit = int(q["limitBytes"]) if q.get("limitBytes") else None
            since = None
            if q.get("sinceSeconds"):
                since = now() - dt.timedelta(seconds=int(q["sinceSeconds"]))
            elif q.get("sinceTime"):
                since = parse_ts(q["sinceTime"])
        except ValueError:
            return self.error(400, '{"message": "Unable to decode query."}')
        stream = q.get("stream") or "All"
        if stream not in ("All", "Stdout", "Stderr"):
            return self.error(400, f'invalid stream type "{stream}"')
        if stream != "All" and not self.server.kubelet.a.split_streams:
            return self.error(400, f'unable to return the given log stream: "{stream}". '
                                   'Please enable PodLogsQuerySplitStreams feature gate in kubelet '
                                   '(process-kubelet: start it with --split-streams)')
        follow = truthy(q.get("follow"))
        stamps = truthy(q.get("timestamps"))
        w = self.server.kubelet.worker_by_name(ns, name)
        if w is None:
            return self.error(404, f'pod "{name}" does not exist')
        if container not in [c["name"] for c in w.all_containers()]:
            return self.error(404, f'container "{container}" not found in pod "{name}"')
        if truthy(q.get("previous")):
            return self.error(400, f'previous terminated container "{container}" in pod "{name}" not found')
        lg = w.logs.get(container)
        if lg is None:
            if container in w.cstate:  # StartError: terminated without output
                return self.serve(None, follow, tail, limit, since, stream, stamps)
            reason = w.waiting.get(container, ("PodInitializing", None))[0]
            return self.error(400, f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        return self.serve(lg, follow, tail, limit, since, stream, stamps)

    def serve(self, lg, follow, tail, limit, since, stream, stamps):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        want = {"All": ("stdout", "stderr"), "Stdout": ("stdout",), "Stderr": ("stderr",)}[stream]

        def keep(e):
            return e[1] in want and (since is None or e[0] >= since)
        left = limit
        try:
            if lg is not None:
                with lg.cond:
                    snap = len(lg.entries)
                    first = [e for e in lg.entries[:snap] if keep(e)]
                if tail >= 0:
                    first = first[-tail:] if tail else []
                idx = snap
                batch = first
                while True:
                    for e in batch:
                        if not keep(e):
                            continue
                        data = lg.read(e[2], e[3])
                        if stamps:
                            data = nano_ts(e[0]).encode() + b" " + data
                        if left is not None:
                            data = data[:left]
                            left -= len(data)
                        self.chunk(data)
                        if left == 0:
                            break
                    if not follow or left == 0:
                        break
                    with lg.cond:
                        while idx >= len(lg.entries) and not lg.done and not self.server.kubelet.stopping:
                            lg.cond.wait(1.0)
                        batch = lg.entries[idx:]
                        idx = len(lg.entries)
                        drained = lg.done
                    if drained and not batch:
                        break
                    if self.server.kubelet.stopping and not batch:
                        break
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            pass
        self.close_connection = True


# ---- the kubelet ---------------------------------------------------------------------------------
class ProcessKubelet:
    def __init__(self, a):
        self.a = a
        a.data_dir = os.path.abspath(a.data_dir)
        os.makedirs(os.path.join(a.data_dir, "pgids"), exist_ok=True)
        a.bin_dir = os.path.abspath(a.bin_dir)
        self.c = Client(a.kubeconfig, os.path.join(a.data_dir, "client"))
        self.node = a.node
        self.rules = []
        for r in a.rule:
            m = re.fullmatch(r"(.*)=(-?\d+)(?:x(\d+))?", r)
            if not m:
                sys.exit(f"bad --rule {r!r}: want REGEX=CODE or REGEX=CODExN")
            self.rules.append({"re": re.compile(m.group(1)), "code": int(m.group(2)),
                               "left": int(m.group(3)) if m.group(3) else None})
        self.decided = {}
        self.rule_lock = threading.Lock()
        self.workers = {}  # uid -> PodWorker
        self.wlock = threading.Lock()
        self.pgids = set()
        self.pglock = threading.Lock()
        self.deleting = {}  # uid -> time of our last DELETE
        self.last_status = 0.0
        self.last_lease = 0.0
        self.last_pv = 0.0
        self.stop = False
        self.stopping = False
        self.wake = threading.Event()
        self.first_sync = True
        self.labels = {}
        # added to every process's environment (the pod's own env wins)
        self.extra_env = {n: os.environ[n] for n in a.pass_env if n in os.environ}
        for kv in a.env:
            k, _, v = kv.partition("=")
            self.extra_env[k] = v

    # -- bookkeeping for SIGTERM of the kubelet --
    # Each live container process group is also a file <data-dir>/pgids/<pgid>, so that down.sh can
    # clean up even after this kubelet was SIGKILLed.
    def register_pgid(self, pg):
        with self.pglock:
            self.pgids.add(pg)
            open(os.path.join(self.a.data_dir, "pgids", str(pg)), "w").close()

    def unregister_pgid(self, pg):
        with self.pglock:
            self.pgids.discard(pg)
            try:
                os.unlink(os.path.join(self.a.data_dir, "pgids", str(pg)))
            except FileNotFoundError:
                pass

    def worker_by_name(self, ns, name):
        with self.wlock:
            ws = [w for w in self.workers.values() if w.pod["metadata"]["namespace"] == ns
                  and w.pod["metadata"]["name"] == name]
        return ws[-1] if ws else None

    def rule_code(self, pod):
        md = pod["metadata"]
        with self.rule_lock:
            if md["uid"] in self.decided:
                return self.decided[md["uid"]]
            code = None
            keys = [f"{md['namespace']}/{md['name']}", (md.get("labels") or {}).get("batch.kubernetes.io/job-name", "")]
            for r in self.rules:
                if r["left"] == 0:
                    continue
                if any(k and r["re"].search(k) for k in keys):
                    code = r["code"]
                    if r["left"] is not None:
                        r["left"] -= 1
                    break
            self.decided[md["uid"]] = code
            return code

    # -- log server --
    def start_log_server(self):
        a = self.a
        cert, key = a.tls_cert, a.tls_key
        if not (cert and key):
            tdir = os.path.join(a.data_dir, "tls")
            os.makedirs(tdir, exist_ok=True)
            cert, key = os.path.join(tdir, "kubelet.crt"), os.path.join(tdir, "kubelet.key")
            if not (os.path.exists(cert) and os.path.exists(key)):
                subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                                "-nodes", "-keyout", key, "-out", cert, "-days", "3650", "-subj", f"/CN={self.node}",
                                "-addext", f"subjectAltName=IP:{NODE_IP},DNS:localhost,DNS:{self.node}"],
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                os.chmod(key, 0o600)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if a.client_ca_file:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(a.client_ca_file)
        self.server = LogServer((NODE_IP, a.port), LogHandler, ctx, self)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True,
                         name="log-server").start()
        log(f"log server on https://{NODE_IP}:{self.port} (client certs: {a.client_ca_file or 'not checked'})")

    # -- node --
    def node_status(self):
        cap = {"cpu": str(self.a.cpu), "memory": self.a.memory, "pods": str(self.a.max_pods),
               "ephemeral-storage": "500Gi", "nvidia.com/gpu": str(self.a.gpus)}
        t = ts()

        def cond(typ, st, reason, msg):
            return {"type": typ, "status": st, "reason": reason, "message": msg,
                    "lastHeartbeatTime": t, "lastTransitionTime": self.started}
        return {"status": {
            "capacity": cap, "allocatable": cap,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "process-kubelet"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "process-kubelet"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "process-kubelet"),
                cond("Ready", "True", "KubeletReady", "process-kubelet is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": NODE_IP}, {"type": "Hostname", "address": self.node}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {"machineID": "process-kubelet", "systemUUID": "process-kubelet", "bootID": self.boot_id,
                         "kernelVersion": os.uname().release, "osImage": "process-kubelet (local processes)",
                         "containerRuntimeVersion": "process://1.0", "kubeletVersion": self.a.kubelet_version,
                         "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
        }}

    def ensure_node(self):
        self.started = ts()
        self.boot_id = f"{os.getpid()}-{int(time.time())}"
        labels = {"kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  "type": "process-kubelet"}
        for lab in self.a.node_label:
            k, _, v = lab.partition("=")
            labels[k] = v
        self.labels = labels
        taints = []
        for t in self.a.node_taint:  # key=value:Effect or key:Effect
            kv, _, eff = t.rpartition(":")
            k, _, v = kv.partition("=")
            taints.append({"key": k, "value": v, "effect": eff} if v else {"key": k, "effect": eff})
        n = self.c.get(f"/api/v1/nodes/{self.node}", ok404=True)
        if n is None:
            body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node, "labels": labels}}
            if taints:
                body["spec"] = {"taints": taints}
            self.c.post("/api/v1/nodes", body)
            log(f"node {self.node} registered (labels {labels})")
        else:
            self.c.patch(f"/api/v1/nodes/{self.node}", {"metadata": {"labels": labels}})
        self.heartbeat(force=True)

    def heartbeat(self, force=False):
        t = time.time()
        if force or t - self.last_status >= 10:
            self.c.patch(f"/api/v1/nodes/{self.node}/status", self.node_status())
            self.last_status = t
        if force or t - self.last_lease >= 10:
            p = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node}"
            spec = {"holderIdentity": self.node, "leaseDurationSeconds": 40, "renewTime": micro_ts()}
            lease = self.c.get(p, ok404=True)
            if lease is None:
                nd = self.c.get(f"/api/v1/nodes/{self.node}")
                self.c.post("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.node, "namespace": "kube-node-lease", "ownerReferences": [
                        {"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": nd["metadata"]["uid"]}]},
                    "spec": spec})
            else:
                self.c.patch(p, {"spec": spec}, kind="merge-patch")
            self.last_lease = t

    # -- volumes --
    def pv_dir(self, ns, claim):
        return os.path.join(self.a.data_dir, "pv", f"{ns}-{claim}")

    def provision(self):
        for pvc in self.c.get("/api/v1/persistentvolumeclaims")["items"]:
            md, sp = pvc["metadata"], pvc["spec"]
            if pvc.get("status", {}).get("phase") != "Pending" or sp.get("volumeName") or md.get("deletionTimestamp"):
                continue
            name = ("pv-" + md["namespace"] + "-" + md["name"])[:253]
            if self.c.get(f"/api/v1/persistentvolumes/{name}", ok404=True) is not None:
                continue
            size = sp.get("resources", {}).get("requests", {}).get("storage", "1Gi")
            path = self.pv_dir(md["namespace"], md["name"])
            os.makedirs(path, exist_ok=True)
            pv = {"apiVersion": "v1", "kind": "PersistentVolume",
                  "metadata": {"name": name, "labels": {"process-kubelet/provisioned": "true",
                                                        "process-kubelet/node": self.node}},
                  "spec": {"capacity": {"storage": size},
                           "accessModes": sp.get("accessModes") or ["ReadWriteOnce"],
                           "volumeMode": sp.get("volumeMode", "Filesystem"),
                           "persistentVolumeReclaimPolicy": "Retain",
                           "storageClassName": sp.get("storageClassName") or "",
                           "hostPath": {"path": path, "type": "DirectoryOrCreate"},
                           "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                        "namespace": md["namespace"], "name": md["name"], "uid": md["uid"]}}}
            try:
                self.c.post("/api/v1/persistentvolumes", pv)
                log(f"pv {name} created for pvc {md['namespace']}/{md['name']} ({size}) at {path}")
            except ApiError as e:
                if e.status != 409:
                    log(f"pv {name}: {e}")
        sel = urllib.parse.quote(f"process-kubelet/provisioned=true,process-kubelet/node={self.node}")
        for pv in self.c.get(f"/api/v1/persistentvolumes?labelSelector={sel}")["items"]:
            if pv.get("status", {}).get("phase") == "Released":
                self.c.delete(f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
                path = (pv["spec"].get("hostPath") or {}).get("path", "")
                if path.startswith(os.path.join(self.a.data_dir, "pv") + os.sep):
                    shutil.rmtree(path, ignore_errors=True)
                log(f"pv {pv['metadata']['name']} released: deleted with {path}")

    # -- pods --
    def bind_unscheduled(self):
        pods = self.c.get("/api/v1/pods?fieldSelector=" + urllib.parse.quote(
            "spec.nodeName=,status.phase=Pending"))["items"]
        t = now()
        for pod in pods:
            md, sp = pod["metadata"], pod["spec"]
            if md.get("deletionTimestamp") or sp.get("schedulingGates"):
                continue
            if any(self.labels.get(k) != v for k, v in (sp.get("nodeSelector") or {}).items()):
                continue
            if (t - parse_ts(md["creationTimestamp"])).total_seconds() < self.a.bind_after:
                continue
            try:
                self.c.post(pod_path(pod) + "/binding", {
                    "apiVersion": "v1", "kind": "Binding", "metadata": {"name": md["name"], "namespace": md["namespace"]},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": self.node}})
                log(f"pod {pod_key(pod)} bound to {self.node}")
            except ApiError as e:
                if e.status != 409:
                    log(f"bind {pod_key(pod)}: {e}")

    def delete_pod(self, pod):
        uid = pod["metadata"]["uid"]
        if time.time() - self.deleting.get(uid, 0) < 5:
            return
        self.deleting[uid] = time.time()
        try:
            self.c.delete(pod_path(pod), {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                                          "preconditions": {"uid": uid}})
            log(f"pod {pod_key(pod)} removed")
        except ApiError as e:
            if e.status not in (404, 409):
                log(f"delete {pod_key(pod)}: {e}")

    def orphan(self, pod):
        """A pod this node had started before this kubelet (re)started: its processes are gone."""
        t = ts()
        cs = []
        for c in pod["spec"]["containers"]:
            cs.append({"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": False, "started": False,
                       "restartCount": 0, "lastState": {}, "state": {"terminated": {
                           "exitCode": 137, "reason": "ContainerStatusUnknown", "startedAt": t, "finishedAt": t,
                           "message": "The container could not be located when the pod was terminated"}}})
        try:
            self.c.patch(pod_path(pod) + "/status", {"status": {"phase": "Failed", "containerStatuses": cs}})
            log(f"pod {pod_key(pod)} Failed: its processes were lost when process-kubelet restarted")
        except ApiError as e:
            log(f"pod {pod_key(pod)}: {e}")

    def sync_pods(self):
        pods = self.c.get("/api/v1/pods?fieldSelector=" + urllib.parse.quote(f"spec.nodeName={self.node}"))["items"]
        seen = set()
        for pod in pods:
            md, st = pod["metadata"], pod.setdefault("status", {})
            uid = md["uid"]
            seen.add(uid)
            phase = st.get("phase")
            with self.wlock:
                w = self.workers.get(uid)
            if w is not None:
                w.pod["metadata"] = md  # fresh labels/annotations/deletionTimestamp
            if md.get("deletionTimestamp"):
                if w is not None and not w.finished:
                    grace = md.get("deletionGracePeriodSeconds")
                    if grace is None:
                        grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
                    w.request_kill(grace, "pod deleted")
                elif w is None and phase not in ("Succeeded", "Failed"):
                    if st.get("startTime") and self.first_sync:
                        self.orphan(pod)
                    self.delete_pod(pod)
                else:
                    self.delete_pod(pod)
                continue
            if phase in ("Succeeded", "Failed"):
                continue
            if w is None:
                if self.first_sync and phase == "Running":
                    self.orphan(pod)
                    continue
                w = PodWorker(self, pod)
                with self.wlock:
                    self.workers[uid] = w
                log(f"pod {pod_key(pod)} admitted")
                w.start()
        with self.wlock:
            gone = [w for uid, w in self.workers.items() if uid not in seen]
        for w in gone:
            if not w.finished:
                w.request_kill(0, "pod removed from the API")
            else:
                with self.wlock:
                    self.workers.pop(w.uid, None)
                self.deleting.pop(w.uid, None)
                w.cleanup()
        self.first_sync = False

    def shutdown(self):
        """SIGTERM of the kubelet: every container process group gets TERM, KILL after --stop-grace."""
        self.stopping = True
        with self.wlock:
            ws = [w for w in self.workers.values() if not w.finished]
        for w in ws:
            w.request_kill(self.a.stop_grace, "process-kubelet stopping")
        deadline = time.time() + self.a.stop_grace + 5
        for w in ws:
            w.join(timeout=max(0.1, deadline - time.time()))
        with self.pglock:
            left = list(self.pgids)
        for pg in left:
            try:
                os.killpg(pg, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.unregister_pgid(pg)
        try:
            self.server.shutdown()
        except Exception:  # noqa
            pass
        log("stopped")

    def kill_leftovers(self):
        """Container process groups a previous, SIGKILLed instance left behind (their leader's cwd is in
        our data dir): SIGKILL them."""
        pdir = os.path.join(self.a.data_dir, "pgids")
        for f in os.listdir(pdir):
            try:
                cwd = os.readlink(f"/proc/{int(f)}/cwd")
                if cwd.startswith(self.a.data_dir + os.sep):
                    os.killpg(int(f), signal.SIGKILL)
                    log(f"killed process group {f} left by a previous process-kubelet")
            except (ValueError, OSError):
                pass
            try:
                os.unlink(os.path.join(pdir, f))
            except OSError:
                pass

    def run(self):
        self.kill_leftovers()
        self.start_log_server()
        while True:
            try:
                self.ensure_node()
                break
            except (ApiError, OSError, http.client.HTTPException) as e:
                log(f"registering node {self.node}: {e} (retrying)")
                if self.stop:
                    return self.shutdown()
                time.sleep(1)
        log(f"process-kubelet for node {self.node} running (bin-dir {self.a.bin_dir}, data-dir {self.a.data_dir}, "
            f"bind={'off' if self.a.bind_after < 0 else f'after {self.a.bind_after}s'}, rules={self.a.rule})")
        while not self.stop:
            try:
                self.heartbeat()
                if not self.a.no_pv and time.time() - self.last_pv >= 1.0:
                    self.provision()
                    self.last_pv = time.time()
                if self.a.bind_after >= 0:
                    self.bind_unscheduled()
                self.sync_pods()
            except (ApiError, OSError, http.client.HTTPException) as e:
                log(f"loop error: {e}")
                if isinstance(e, ApiError) and e.status == 404:
                    try:
                        self.ensure_node()
                    except Exception as e2:  # noqa
                        log(f"re-register failed: {e2}")
            self.wake.wait(self.a.interval)
            self.wake.clear()
        self.shutdown()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG", os.path.expanduser("~/.kube/config")).split(":")[0])
    p.add_argument("--bin-dir", default=os.environ.get("KUBESTYLE_BIN_DIR"),
                   help="where command[0] of every container is looked up (default $KUBESTYLE_BIN_DIR)")
    p.add_argument("--data-dir", default="/tmp/process-kubelet",
                   help="pods/<ns>_<pod>_<uid>/{logs,volumes,cwd}, pv/<ns>-<claim>, tls/, client/")
    p.add_argument("--path", default="/usr/local/bin:/usr/bin:/bin", help="PATH after --bin-dir in the processes")
    p.add_argument("--pass-env", action="append", default=[], metavar="NAME",
                   help="pass this variable of the kubelet's environment to every process (repeatable; e.g. "
                        "LD_LIBRARY_PATH, RUST_LOG, LLVM_PROFILE_FILE); the pod's env wins")
    p.add_argument("--env", action="append", default=[], metavar="K=V",
                   help="set K=V in every process (repeatable); the pod's env wins")
    p.add_argument("--node", default="process-node-1")
    p.add_argument("--node-label", action="append", default=[], help="k=v, repeatable (e.g. nvidia.com/gpu.present=true)")
    p.add_argument("--node-taint", action="append", default=[], help="key=value:Effect, repeatable")
    p.add_argument("--cpu", default="32")
    p.add_argument("--memory", default="128Gi")
    p.add_argument("--gpus", type=int, default=8, help="nvidia.com/gpu capacity/allocatable")
    p.add_argument("--max-pods", type=int, default=110)
    p.add_argument("--kubelet-version", default="v1.36.2")
    p.add_argument("--port", type=int, default=0, help="log server port on 127.0.0.1 (default: a free one)")
    p.add_argument("--tls-cert", help="log server certificate (default: self-signed, made with openssl)")
    p.add_argument("--tls-key")
    p.add_argument("--client-ca-file", help="require log clients to present a certificate from this CA")
    p.add_argument("--rule", action="append", default=[], help="REGEX=CODE or REGEX=CODExN, repeatable (override)")
    p.add_argument("--bind-after", type=float, default=-1,
                   help="also bind matching pods unscheduled for this many seconds (default off: kube-scheduler binds)")
    p.add_argument("--no-pv", action="store_true", help="do not create PVs for pending PVCs")
    p.add_argument("--split-streams", action="store_true",
                   help="capture stdout and stderr apart (the logs' `stream` parameter works, but the order "
                        "between the two is not kept); default: one pipe, order kept, stream=All only")
    p.add_argument("--config-retry", type=float, default=2.0, help="seconds between CreateContainerConfigError retries")
    p.add_argument("--stop-grace", type=float, default=5.0, help="on SIGTERM: seconds between TERM and KILL of the pods")
    p.add_argument("--interval", type=float, default=0.5)
    p.add_argument("--verbose", action="store_true", help="log every log-server request")
    a = p.parse_args()
    if not a.bin_dir or not os.path.isdir(a.bin_dir):
        p.error(f"--bin-dir (or KUBESTYLE_BIN_DIR) must be a directory, got {a.bin_dir!r}")
    k = ProcessKubelet(a)

    def on_sig(*_):
        k.stop = True
        k.wake.set()
    signal.signal(signal.SIGTERM, on_sig)
    signal.signal(signal.SIGINT, on_sig)
    k.run()


if __name__ == "__main__":
    main()
