#!/usr/bin/env python3
"""Run a `pipeline compile --target kfp` document on this machine with the kfp SDK's local
DockerRunner: every step in its real image, the Pipeline Run Workspace bind-mounted at
/kfp-workspace, no Kubeflow installation.

usage: kfp_local.py COMPILED.yaml [--workspace DIR] [--network host]

What differs from a KFP cluster, and what this script does about it:
* kfp local appends a container's `command` to the image's ENTRYPOINT (Kubernetes replaces it);
  our images' entrypoint is the stage binary, so the runner is given `entrypoint=['']`.
* kfp local ignores the `platforms.kubernetes` document: the S3 Secret (`secretAsEnv`) is not
  read, so the AWS_* variables of this process (names only: AWS_ACCESS_KEY_ID,
  AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL,
  AWS_EC2_METADATA_DISABLED) are given to every step's container instead; the securityContext
  is not applied (the images' own USER 65532 still is), nor resources or GPU settings.
* `--kfp-volume pvc` documents do not run locally (their createpvc step has no image); compile
  with the default workspace.
* The SDK removes the workspace after the run, failed or not.

Exit status 0 when the pipeline succeeded, 1 when it failed, 2 on bad usage.
Needs: kfp >= 2.15 (scripts/requirements-test.txt pins it), docker, the images named in the
document present locally (no pull is attempted when they are).
"""
import argparse
import os
import sys
import tempfile

CREDENTIAL_NAMES = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_EC2_METADATA_DISABLED",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("compiled", help="a `pipeline compile --target kfp` document")
    ap.add_argument("--workspace", help="the workspace root (default: a fresh temp dir)")
    ap.add_argument("--network", default="host",
                    help="docker network mode of the steps (default host: reach a local S3)")
    a = ap.parse_args()
    if not os.path.isfile(a.compiled):
        print(f"kfp_local: {a.compiled}: no such file", file=sys.stderr)
        return 2
    from kfp import local
    from kfp.components import load_component_from_file

    base = a.workspace or tempfile.mkdtemp(prefix="kfp-local-")
    workspace = os.path.join(base, "workspace")
    outputs = os.path.join(base, "outputs")
    for d in (workspace, outputs):
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o777)  # the steps run as 65532
    env = {k: os.environ[k] for k in CREDENTIAL_NAMES if os.environ.get(k)}
    print(f"kfp_local: workspace {workspace}; passing {sorted(env)} (names only)", flush=True)
    local.init(
        runner=local.DockerRunner(entrypoint=[""], network_mode=a.network, environment=env),
        pipeline_root=outputs,
        workspace_root=workspace,
        raise_on_error=True,
    )
    pipeline = load_component_from_file(a.compiled)
    try:
        pipeline()
    except Exception as e:  # the SDK raises RuntimeError naming the failed task
        print(f"kfp_local: the pipeline failed: {e}", file=sys.stderr)
        return 1
    print(f"kfp_local: pipeline {pipeline.name} succeeded", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
