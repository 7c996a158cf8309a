#!/usr/bin/env python3
"""Validate `pipeline compile` output with the engines' own definitions.

    validate_compiled.py kfp  FILE...   # Kubeflow Pipelines
    validate_compiled.py argo FILE...   # Argo Workflows

KFP (PyPI kfp-pipeline-spec, kfp-kubernetes, kfp; no JSON Schema exists):
  * the first YAML document parses into the `ml_pipelines.PipelineSpec` protobuf with unknown
    fields refused (as the API server's protojson.Unmarshal does), and its `deploymentSpec`
    (a google.protobuf.Struct there) into `PipelineDeploymentConfig`, so that a wrong executor
    field is caught too;
  * the second document parses into `PlatformSpec`, and each Kubernetes executor config (a
    Struct there as well) into kfp-kubernetes' `KubernetesExecutorConfig`;
  * the API server's own checks: schemaVersion 2.1.0, a DNS-style lowercase pipeline name, a
    root DAG; and the references: componentRef → components, executorLabel → executors,
    dependentTasks within their DAG, platform executors → executors, parameter iterators →
    component inputs;
  * the kfp SDK loads the file (`kfp.components.load_component_from_file`) and compiles the
    loaded pipeline again (`kfp.compiler.Compiler`).

Argo (PyPI hera-workflows: pydantic models generated from Argo Workflows' published JSON Schema):
  * the document validates as an `io.argoproj.workflow.v1alpha1.Workflow` with unknown fields
    refused (every model set to `extra="forbid"`) and strict types;
  * what `argo lint` would check beyond the schema: the entrypoint, every DAG task's template
    and dependencies, declared input parameters for `{{inputs.parameters.X}}`, arguments for
    every declared input, and every volume mount naming a volume or a claim template.

Exit status: 0 when every file is valid, 1 otherwise (each problem printed), 2 on usage errors.
"""

import json
import re
import sys

import yaml


def fail(problems, path, msg):
    problems.append(f"{path}: {msg}")


# --- Kubeflow Pipelines -------------------------------------------------------------------------

DNS = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def check_kfp(path, problems):
    from google.protobuf import json_format
    from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb
    from kfp.pipeline_spec import pipeline_spec_pb2 as pb

    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    if not docs:
        return fail(problems, path, "no YAML document")
    if len(docs) > 2:
        fail(problems, path, f"{len(docs)} documents: a pipeline has a spec and a platform config")

    def parse(what, value, message):
        try:
            return json_format.ParseDict(value, message, ignore_unknown_fields=False)
        except json_format.ParseError as e:
            fail(problems, path, f"{what}: {e}")
            return None

    spec_doc = docs[0]
    spec = parse("PipelineSpec", spec_doc, pb.PipelineSpec())
    deployment = parse(
        "deploymentSpec (PipelineDeploymentConfig)",
        spec_doc.get("deploymentSpec", {}),
        pb.PipelineDeploymentConfig(),
    )
    if spec is None:
        return
    # The KFP API server's own checks (backend/src/apiserver/template/v2_template.go).
    if spec.schema_version != "2.1.0":
        fail(problems, path, f"schemaVersion {spec.schema_version!r}, the API server wants 2.1.0")
    if not DNS.match(spec.pipeline_info.name):
        fail(problems, path, f"pipelineInfo.name {spec.pipeline_info.name!r} is not a lowercase DNS name")
    if not spec.HasField("root") or not spec.root.HasField("dag"):
        fail(problems, path, "no root DAG")

    # (When deploymentSpec did not parse, its references are not checked again.)
    executors = set(deployment.executors) if deployment is not None else None
    for name, comp in spec.components.items():
        if executors is None:
            break
        if comp.executor_label and comp.executor_label not in executors:
            fail(problems, path, f"component {name}: executor {comp.executor_label} is not defined")
        for ex_name in [comp.executor_label] if comp.executor_label else []:
            ex = deployment.executors.get(ex_name) if deployment is not None else None
            if ex is not None and ex.HasField("container") and not ex.container.image:
                fail(problems, path, f"executor {ex_name}: no image")

    def check_dag(where, dag):
        for tname, task in dag.tasks.items():
            ref = task.component_ref.name
            if ref not in spec.components:
                fail(problems, path, f"{where} task {tname}: component {ref!r} is not defined")
                continue
            comp = spec.components[ref]
            for dep in task.dependent_tasks:
                if dep not in dag.tasks:
                    fail(problems, path, f"{where} task {tname}: depends on unknown task {dep!r}")
            inputs = comp.input_definitions.parameters
            for p, v in task.inputs.parameters.items():
                if p not in inputs:
                    fail(problems, path, f"{where} task {tname}: input {p!r} is not an input of {ref}")
            for p, d in inputs.items():
                given = p in task.inputs.parameters or (
                    task.HasField("parameter_iterator") and task.parameter_iterator.item_input == p
                )
                if not given and not d.is_optional:
                    fail(problems, path, f"{where} task {tname}: required input {p!r} of {ref} is not given")
            if task.HasField("parameter_iterator"):
                it = task.parameter_iterator
                if it.item_input not in inputs:
                    fail(problems, path, f"{where} task {tname}: iterator item {it.item_input!r} is not an input of {ref}")
            if comp.HasField("dag"):
                check_dag(f"{ref}:", comp.dag)

    check_dag("root", spec.root.dag)

    if len(docs) > 1:
        platform = parse("PlatformSpec", docs[1], pb.PlatformSpec())
        k8s = docs[1].get("platforms", {}).get("kubernetes", {})
        for ex_name, cfg in k8s.get("deploymentSpec", {}).get("executors", {}).items():
            parse(f"platform executor {ex_name} (KubernetesExecutorConfig)", cfg, k8s_pb.KubernetesExecutorConfig())
            if executors is not None and ex_name not in executors:
                fail(problems, path, f"platform config for unknown executor {ex_name}")
        del platform

    # The SDK: load the pipeline, then compile it again.
    import os
    import tempfile

    from kfp import compiler, components

    try:
        loaded = components.load_component_from_file(path)
    except Exception as e:  # noqa: BLE001 - any SDK refusal is a finding
        return fail(problems, path, f"kfp SDK cannot load it: {type(e).__name__}: {e}")
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "again.yaml")
        try:
            compiler.Compiler().compile(loaded, out)
        except Exception as e:  # noqa: BLE001
            fail(problems, path, f"kfp SDK cannot compile the loaded pipeline: {type(e).__name__}: {e}")


# --- Argo Workflows -----------------------------------------------------------------------------

_ARGO = None


def argo_models():
    """Hera's generated models with unknown fields refused."""
    global _ARGO
    if _ARGO is None:
        from hera.shared._pydantic import APIBaseModel

        if "hera.workflows.models" in sys.modules:
            raise RuntimeError("hera's models were imported before they could be made strict")
        # Every generated model inherits this config when it is created (on import below).
        APIBaseModel.model_config["extra"] = "forbid"
        import hera.workflows.models as models

        _ARGO = models
    return _ARGO


PARAM_REF = re.compile(r"\{\{inputs\.parameters\.([A-Za-z0-9_-]+)\}\}")


def check_argo(path, problems):
    models = argo_models()
    import pydantic

    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    if len(docs) != 1:
        return fail(problems, path, f"{len(docs)} documents, want one Workflow")
    doc = docs[0]
    if doc.get("apiVersion") != "argoproj.io/v1alpha1" or doc.get("kind") != "Workflow":
        fail(problems, path, "not an argoproj.io/v1alpha1 Workflow")
    try:
        # Strict JSON validation, as the controller's Go decoder reads the object.
        models.Workflow.model_validate_json(json.dumps(doc), strict=True)
    except pydantic.ValidationError as e:
        return fail(problems, path, f"Workflow schema: {e}")

    spec = doc["spec"]
    templates = {t["name"]: t for t in spec.get("templates", [])}
    if spec.get("entrypoint") not in templates:
        fail(problems, path, f"entrypoint {spec.get('entrypoint')!r} is not a template")
    volumes = {v["name"] for v in spec.get("volumes", [])}
    volumes |= {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
    for name, t in templates.items():
        declared = {p["name"] for p in t.get("inputs", {}).get("parameters", [])}
        used = set(PARAM_REF.findall(yaml.safe_dump(t)))
        for p in used - declared:
            fail(problems, path, f"template {name}: uses undeclared input parameter {p!r}")
        for m in t.get("container", {}).get("volumeMounts", []):
            if m["name"] not in volumes:
                fail(problems, path, f"template {name}: mounts unknown volume {m['name']!r}")
        tasks = t.get("dag", {}).get("tasks", [])
        names = {x["name"] for x in tasks}
        for task in tasks:
            ref = task.get("template")
            if ref not in templates:
                fail(problems, path, f"task {task['name']}: template {ref!r} is not defined")
                continue
            for dep in task.get("dependencies", []):
                if dep not in names:
                    fail(problems, path, f"task {task['name']}: depends on unknown task {dep!r}")
            want = {p["name"] for p in templates[ref].get("inputs", {}).get("parameters", [])}
            given = {p["name"] for p in task.get("arguments", {}).get("parameters", [])}
            if want != given:
                fail(problems, path, f"task {task['name']}: arguments {sorted(given)} for inputs {sorted(want)}")
            if "{{item}}" in yaml.safe_dump(task.get("arguments", {})) and not (
                "withSequence" in task or "withItems" in task or "withParam" in task
            ):
                fail(problems, path, f"task {task['name']}: uses {{{{item}}}} without a loop")


def main(argv):
    if len(argv) < 3 or argv[1] not in ("kfp", "argo"):
        print(__doc__, file=sys.stderr)
        return 2
    check = check_kfp if argv[1] == "kfp" else check_argo
    problems = []
    for path in argv[2:]:
        before = len(problems)
        check(path, problems)
        if len(problems) == before:
            print(f"ok: {path} ({argv[1]})")
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
