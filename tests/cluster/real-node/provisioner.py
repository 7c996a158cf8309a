#!/usr/bin/env python3
"""The real-kubelet tier's storage: a `local` PersistentVolume on this host for each pending claim
(there is no CSI driver or dynamic provisioner on a bare control plane), pre-bound to the claim and
pinned to the node; a Released volume is deleted with its directory.

A `local` volume, unlike a hostPath one, gets the pod's `fsGroup` from the kubelet (group ownership
and setgid on the directory), which the tier checks: the directory is made root-owned 0755, so a pod
running as 65532 can write only through its fsGroup.

Standard library only; the API client is process-kubelet.py's.

usage: provisioner.py --kubeconfig ADMIN_KUBECONFIG --node NODE --dir DIR
"""
import argparse
import importlib.util
import os
import shutil
import sys
import time
import urllib.parse

sys.dont_write_bytecode = True  # nothing written into the repository
here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("process_kubelet", os.path.join(here, "..", "process-kubelet.py"))
pk = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pk)

LABEL = "kubestyle-tier/provisioned"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--interval", type=float, default=0.5)
    a = ap.parse_args()
    c = pk.Client(a.kubeconfig, os.path.join(a.dir, ".client"))
    pk.log(f"provisioner: local volumes on node {a.node} under {a.dir}")
    while True:
        try:
            once(c, a)
        except Exception as e:  # the API may be restarting; try again
            pk.log(f"provisioner: {e}")
        time.sleep(a.interval)


def once(c, a):
    for pvc in c.get("/api/v1/persistentvolumeclaims")["items"]:
        md, sp = pvc["metadata"], pvc["spec"]
        if pvc.get("status", {}).get("phase") != "Pending" or sp.get("volumeName") or md.get("deletionTimestamp"):
            continue
        name = ("pv-" + md["namespace"] + "-" + md["name"])[:253]
        if c.get(f"/api/v1/persistentvolumes/{name}", ok404=True) is not None:
            continue
        path = os.path.join(a.dir, f"{md['namespace']}-{md['name']}")
        os.makedirs(path, exist_ok=True)
        os.chown(path, 0, 0)
        os.chmod(path, 0o755)
        size = sp.get("resources", {}).get("requests", {}).get("storage", "1Gi")
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": {LABEL: "true", "kubestyle-tier/node": a.node}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": sp.get("accessModes") or ["ReadWriteOnce"],
                "volumeMode": sp.get("volumeMode", "Filesystem"),
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": sp.get("storageClassName") or "",
                "local": {"path": path},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [a.node]}]}]}},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                             "namespace": md["namespace"], "name": md["name"], "uid": md["uid"]},
            },
        }
        try:
            c.post("/api/v1/persistentvolumes", pv)
            pk.log(f"provisioner: pv {name} for pvc {md['namespace']}/{md['name']} ({size}) at {path}")
        except pk.ApiError as e:
            if e.status != 409:
                pk.log(f"provisioner: pv {name}: {e}")
    sel = urllib.parse.quote(f"{LABEL}=true,kubestyle-tier/node={a.node}")
    for pv in c.get(f"/api/v1/persistentvolumes?labelSelector={sel}")["items"]:
        if pv.get("status", {}).get("phase") == "Released":
            c.delete(f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
            path = (pv["spec"].get("local") or {}).get("path", "")
            if path.startswith(os.path.join(a.dir, "")):
                shutil.rmtree(path, ignore_errors=True)
            pk.log(f"provisioner: pv {pv['metadata']['name']} released: deleted with {path}")


if __name__ == "__main__":
    sys.exit(main())
