//! `pipeline submit` against a mocked API server (tower-test), the way kube-rs tests itself:
//! a task plays the API server's side of a scenario, call by call, asserting each request; a
//! timeout fails the test when an expected call never comes or an unexpected one is made.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kubestyle_pipeline::spec::{self, Loaded};
use kubestyle_pipeline::submit::{SubmitOptions, submit};
use kubestyle_pipeline::{PipelineError, Stage};
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const NS: &str = "kubestyle";
const STAGES: [&str; 4] = ["download", "package-model", "stylize", "upload"];

fn spec() -> Loaded {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/example-spec.yaml"
    );
    spec::load(std::path::Path::new(p)).unwrap()
}

fn mock() -> (Client, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(svc, NS), handle)
}

fn opts(timeout: Duration) -> SubmitOptions {
    let mut o = SubmitOptions::new(timeout);
    o.log_poll = Duration::from_millis(50);
    o.pod_check = None;
    o
}

fn respond(code: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// The next request, checked: method and a path fragment. Returns the request's JSON body.
async fn expect(
    h: &mut Handle,
    method: Method,
    path: &str,
) -> (Value, tower_test::mock::SendResponse<Response<Body>>) {
    let (req, send) = tokio::time::timeout(Duration::from_secs(10), h.next_request())
        .await
        .unwrap_or_else(|_| panic!("no {method} {path} request came"))
        .expect("client hung up");
    let uri = req.uri().to_string();
    assert_eq!(req.method(), method, "{uri}");
    assert!(uri.contains(path), "expected {path} in {uri}");
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (body, send)
}

fn with_conditions(mut job: Value, conds: &[(&str, &str)]) -> Value {
    job["status"] = json!({
        "conditions": conds.iter().map(|(t, r)| json!({"type": t, "status": "True", "reason": r, "message": format!("{t} by mock")})).collect::<Vec<_>>()
    });
    job["metadata"]["resourceVersion"] = json!("7");
    job
}

fn job_list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "JobList", "metadata": {"resourceVersion": "7"}, "items": items})
}

fn pod_list(job: &str, exit: i32) -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "8"}, "items": [{
        "metadata": {"name": format!("{job}-abcde"), "namespace": NS,
                     "creationTimestamp": "2026-11-22T08:00:00Z"},
        "status": {"containerStatuses": [{
            "name": "x", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": exit, "reason": "Error"}}}]}
    }]})
}

fn text(s: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .body(Body::from(s.as_bytes().to_vec()))
        .unwrap()
}

/// The claim is created; returns nothing.
async fn claim_created(h: &mut Handle) {
    let (body, send) = expect(
        h,
        Method::POST,
        "/api/v1/namespaces/kubestyle/persistentvolumeclaims",
    )
    .await;
    assert_eq!(body["metadata"]["name"], "demo-k8s-volume");
    send.send_response(respond(StatusCode::CREATED, &body));
}

/// A Job is created and its first list shows it as `listed` makes it (from the posted body);
/// returns the posted body.
async fn job_listed(h: &mut Handle, stage: &str, listed: impl FnOnce(Value) -> Value) -> Value {
    let (body, send) = expect(h, Method::POST, "/apis/batch/v1/namespaces/kubestyle/jobs").await;
    assert_eq!(body["metadata"]["name"], format!("demo-k8s-{stage}"));
    send.send_response(respond(StatusCode::CREATED, &body));
    let (_, send) = expect(
        h,
        Method::GET,
        &format!("fieldSelector=metadata.name%3Ddemo-k8s-{stage}"),
    )
    .await;
    send.send_response(respond(
        StatusCode::OK,
        &job_list(vec![listed(body.clone())]),
    ));
    body
}

/// A Job is created and its watch shows it complete at once.
async fn job_completes(h: &mut Handle, stage: &str) -> Value {
    job_listed(h, stage, |b| with_conditions(b, &[("Complete", "Done")])).await
}

/// The download Job is created and listed as running (resource version 7, with `status` when
/// given); returns its body and the watch request that follows, not yet answered.
async fn download_running(
    h: &mut Handle,
    status: Option<Value>,
) -> (Value, tower_test::mock::SendResponse<Response<Body>>) {
    let (body, send) = expect(h, Method::POST, "/jobs").await;
    send.send_response(respond(StatusCode::CREATED, &body));
    let (_, send) = expect(
        h,
        Method::GET,
        "fieldSelector=metadata.name%3Ddemo-k8s-download",
    )
    .await;
    let mut running = body.clone();
    running["metadata"]["resourceVersion"] = json!("7");
    if let Some(status) = status {
        running["status"] = status;
    }
    send.send_response(respond(StatusCode::OK, &job_list(vec![running])));
    let (_, watch) = expect(h, Method::GET, "watch=true").await;
    (body, watch)
}

async fn pod_log(h: &mut Handle, stage: &str, exit: i32, log: &str) {
    let (_, send) = expect(
        h,
        Method::GET,
        &format!("labelSelector=job-name%3Ddemo-k8s-{stage}"),
    )
    .await;
    send.send_response(respond(
        StatusCode::OK,
        &pod_list(&format!("demo-k8s-{stage}"), exit),
    ));
    let (_, send) = expect(h, Method::GET, &format!("/pods/demo-k8s-{stage}-abcde/log")).await;
    send.send_response(text(log));
}

/// A Job's POST meets AlreadyExists; the GET that follows returns it with `conds` (and another
/// spec hash when given). Returns the body that was posted.
async fn job_exists(
    h: &mut Handle,
    stage: &str,
    conds: &[(&str, &str)],
    other_hash: Option<&str>,
) -> Value {
    let (body, send) = expect(h, Method::POST, "/jobs").await;
    assert_eq!(body["metadata"]["name"], format!("demo-k8s-{stage}"));
    send.send_response(respond(
        StatusCode::CONFLICT,
        &status(409, "AlreadyExists", "exists"),
    ));
    let (_, send) = expect(h, Method::GET, &format!("/jobs/demo-k8s-{stage}")).await;
    let mut existing = with_conditions(body.clone(), conds);
    existing["metadata"]["uid"] = json!(format!("uid-{stage}"));
    if let Some(hash) = other_hash {
        existing["metadata"]["labels"]["kubestyle.dev/spec-hash"] = json!(hash);
    }
    send.send_response(respond(StatusCode::OK, &existing));
    body
}

/// The existing Job is deleted (foreground: pods first) and found gone.
async fn job_deleted(h: &mut Handle, stage: &str) {
    let (body, send) = expect(h, Method::DELETE, &format!("/jobs/demo-k8s-{stage}")).await;
    assert_eq!(body["propagationPolicy"], "Foreground", "{body}");
    // Only the Job looked up: its uid is the DELETE's precondition.
    assert_eq!(
        body["preconditions"]["uid"],
        format!("uid-{stage}"),
        "{body}"
    );
    send.send_response(respond(StatusCode::OK, &status(200, "", "deleted")));
    let (_, send) = expect(h, Method::GET, &format!("/jobs/demo-k8s-{stage}")).await;
    send.send_response(respond(
        StatusCode::NOT_FOUND,
        &status(404, "NotFound", "jobs.batch not found"),
    ));
}

/// The claim's POST meets AlreadyExists and the GET returns it (with `hash` as its spec hash
/// when given).
async fn claim_exists(h: &mut Handle, hash: Option<&str>) {
    let (mut body, send) = expect(h, Method::POST, "/persistentvolumeclaims").await;
    send.send_response(respond(
        StatusCode::CONFLICT,
        &status(409, "AlreadyExists", "exists"),
    ));
    let (_, send) = expect(h, Method::GET, "/persistentvolumeclaims/demo-k8s-volume").await;
    if let Some(hash) = hash {
        body["metadata"]["labels"]["kubestyle.dev/spec-hash"] = json!(hash);
    }
    send.send_response(respond(StatusCode::OK, &body));
}

async fn finish(server: tokio::task::JoinHandle<()>) {
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the scenario did not finish")
        .expect("scenario failed");
}

#[tokio::test]
async fn happy_path_claim_then_each_job_in_order() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        claim_created(&mut h).await;
        let mut seen = Vec::new();
        for stage in STAGES {
            let job = job_completes(&mut h, stage).await;
            seen.push(job);
        }
        // The stylize Job is the Indexed one; upload merges its two shard manifests.
        assert_eq!(seen[2]["spec"]["completionMode"], "Indexed");
        let args = seen[3]["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
        assert!(args.contains("stylize-1-of-2.manifest.json"), "{args}");
    });
    let done = submit(client, &spec(), &opts(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(done.len(), 4);
    assert!(done.iter().all(|r| r.created));
    finish(server).await;
}

#[tokio::test]
async fn status_transitions_through_the_watch() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        claim_created(&mut h).await;
        // download: listed as running, then the watch says Complete.
        let (body, send) = download_running(&mut h, Some(json!({"active": 1}))).await;
        let event =
            json!({"type": "MODIFIED", "object": with_conditions(body, &[("Complete", "Done")])});
        send.send_response(text(&format!("{event}\n")));
        for stage in &STAGES[1..] {
            job_completes(&mut h, stage).await;
        }
    });
    submit(client, &spec(), &opts(Duration::from_secs(30)))
        .await
        .unwrap();
    finish(server).await;
}

#[tokio::test]
async fn resubmit_adopts_the_same_spec_and_refuses_another() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        // Everything exists already (AlreadyExists), with this spec's hash: adopted.
        let (body, send) = expect(&mut h, Method::POST, "/persistentvolumeclaims").await;
        send.send_response(respond(
            StatusCode::CONFLICT,
            &status(409, "AlreadyExists", "exists"),
        ));
        let (_, send) = expect(
            &mut h,
            Method::GET,
            "/persistentvolumeclaims/demo-k8s-volume",
        )
        .await;
        send.send_response(respond(StatusCode::OK, &body));
        // Complete Jobs of this spec are kept as they are: nothing is watched or re-run.
        for stage in STAGES {
            job_exists(&mut h, stage, &[("Complete", "Done")], None).await;
        }
    });
    let done = submit(client, &spec(), &opts(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(done.iter().all(|r| !r.created));
    finish(server).await;

    // Another spec under the same run name: the claim (the run's data) is kept whatever spec
    // made it, the first Job from the other spec is a conflict, exit 7, nothing else touched.
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        claim_exists(&mut h, Some(OTHER_HASH)).await;
        job_exists(
            &mut h,
            "download",
            &[("Complete", "Done")],
            Some(OTHER_HASH),
        )
        .await;
    });
    let e = submit(client, &spec(), &opts(Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 7, "{e}");
    assert!(e.to_string().contains("another spec"), "{e}");
    finish(server).await;
}

#[tokio::test]
async fn a_job_failing_midway_reports_exit_code_and_log_tail() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        claim_created(&mut h).await;
        job_completes(&mut h, "download").await;
        // Kubernetes >= 1.31 shows FailureTarget before Failed.
        job_listed(&mut h, "package-model", |b| {
            with_conditions(b, &[("FailureTarget", "PodFailurePolicy")])
        })
        .await;
        pod_log(
            &mut h,
            "package-model",
            4,
            "line 1\nERROR model.onnx: not a known style-transfer network (exit 4 input-invalid)",
        )
        .await;
    });
    let e = submit(client, &spec(), &opts(Duration::from_secs(30)))
        .await
        .unwrap_err();
    match &e {
        PipelineError::JobFailed {
            stage, code, tail, ..
        } => {
            assert_eq!(*stage, Stage::PackageModel);
            assert_eq!(*code, Some(4));
            assert!(tail.contains("not a known style-transfer network"));
        }
        other => panic!("{other}"),
    }
    assert_eq!(e.exit_code(), 4);
    assert!(e.to_string().contains("PodFailurePolicy"), "{e}");
    finish(server).await;
}

#[tokio::test]
async fn a_watch_error_is_retried_and_recovers() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        claim_created(&mut h).await;
        let (body, send) = expect(&mut h, Method::POST, "/jobs").await;
        send.send_response(respond(StatusCode::CREATED, &body));
        // The first list fails (API server restarting); the watcher backs off and lists again.
        let (_, send) = expect(
            &mut h,
            Method::GET,
            "fieldSelector=metadata.name%3Ddemo-k8s-download",
        )
        .await;
        send.send_response(respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            &status(500, "InternalError", "etcdserver: leader changed"),
        ));
        let (_, send) = expect(
            &mut h,
            Method::GET,
            "fieldSelector=metadata.name%3Ddemo-k8s-download",
        )
        .await;
        send.send_response(respond(
            StatusCode::OK,
            &job_list(vec![with_conditions(body, &[("Complete", "Done")])]),
        ));
        for stage in &STAGES[1..] {
            job_completes(&mut h, stage).await;
        }
    });
    submit(client, &spec(), &opts(Duration::from_secs(30)))
        .await
        .unwrap();
    finish(server).await;
}

#[tokio::test]
async fn the_overall_timeout_ends_the_wait() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        claim_created(&mut h).await;
        // The watch is opened and never answered.
        let (_, send) = download_running(&mut h, None).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(send);
    });
    let e = submit(client, &spec(), &opts(Duration::from_millis(1500)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            PipelineError::Timeout {
                stage: Stage::Download,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.exit_code(), 124);
    server.abort();
}

#[tokio::test]
async fn rbac_forbidden_is_named() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        let (_, send) = expect(&mut h, Method::POST, "/persistentvolumeclaims").await;
        send.send_response(respond(
            StatusCode::FORBIDDEN,
            &status(
                403,
                "Forbidden",
                "persistentvolumeclaims is forbidden: User \"ci\" cannot create resource",
            ),
        ));
    });
    let e = submit(client, &spec(), &opts(Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 5, "{e}");
    assert!(e.to_string().contains("forbidden by RBAC"), "{e}");
    finish(server).await;
}

#[tokio::test]
async fn a_missing_namespace_is_named() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        let (_, send) = expect(
            &mut h,
            Method::POST,
            "/namespaces/kubestyle/persistentvolumeclaims",
        )
        .await;
        send.send_response(respond(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound", "namespaces \"kubestyle\" not found"),
        ));
    });
    let e = submit(client, &spec(), &opts(Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 3, "{e}");
    assert!(
        e.to_string().contains("namespaces \"kubestyle\" not found"),
        "{e}"
    );
    finish(server).await;
}

#[tokio::test]
async fn a_missing_secret_is_named_instead_of_waiting_for_the_timeout() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        claim_created(&mut h).await;
        let (_, watch) = download_running(&mut h, None).await;
        // The pod check: the container cannot start, its Secret is missing.
        let (_, send) = expect(
            &mut h,
            Method::GET,
            "labelSelector=job-name%3Ddemo-k8s-download",
        )
        .await;
        send.send_response(respond(StatusCode::OK, &json!({
            "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
                "metadata": {"name": "demo-k8s-download-xyz", "namespace": NS},
                "status": {"containerStatuses": [{
                    "name": "download", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "CreateContainerConfigError",
                                          "message": "secret \"kubestyle-s3\" not found"}}}]}}]
        })));
        drop(watch);
    });
    let mut o = opts(Duration::from_secs(30));
    o.pod_check = Some(Duration::from_millis(200));
    let e = submit(client, &spec(), &o).await.unwrap_err();
    assert_eq!(e.exit_code(), 3, "{e}");
    assert!(
        e.to_string().contains("secret \"kubestyle-s3\" not found"),
        "{e}"
    );
    assert!(e.to_string().contains("CreateContainerConfigError"), "{e}");
    finish(server).await;
}

/// `--watch`: each stage's pod log is followed live while its Job runs. Requests from the log
/// follower and the watcher interleave, so this scenario answers by URL, not in order: the Job
/// is reported complete only after its pod's log has been streamed.
#[tokio::test]
async fn watch_follows_pod_logs_live() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        let mut job: Value = Value::Null;
        let mut log_served = false;
        let mut pending_watch: Option<tower_test::mock::SendResponse<Response<Body>>> = None;
        let mut logs_streamed = 0;
        while let Some((req, send)) = h.next_request().await {
            let uri = req.uri().to_string();
            let method = req.method().clone();
            let bytes = req.into_body().collect_bytes().await.unwrap();
            if method == Method::POST {
                let body: Value = serde_json::from_slice(&bytes).unwrap();
                if uri.contains("/jobs") {
                    job = body.clone();
                    log_served = false;
                }
                send.send_response(respond(StatusCode::CREATED, &body));
            } else if uri.contains("watch=true") {
                if log_served {
                    let ev = json!({"type": "MODIFIED", "object": with_conditions(job.clone(), &[("Complete", "Done")])});
                    send.send_response(text(&format!("{ev}\n")));
                } else {
                    pending_watch = Some(send);
                }
            } else if uri.contains("fieldSelector=metadata.name") {
                let mut running = job.clone();
                running["metadata"]["resourceVersion"] = json!("7");
                send.send_response(respond(StatusCode::OK, &job_list(vec![running])));
            } else if uri.contains("labelSelector=job-name") {
                let name = job["metadata"]["name"].as_str().unwrap().to_string();
                send.send_response(respond(
                    StatusCode::OK,
                    &json!({
                    "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
                        "metadata": {"name": format!("{name}-abcde"), "namespace": NS},
                        "status": {"phase": "Running"}}]}),
                ));
            } else if uri.contains("/log") {
                assert!(uri.contains("follow=true"), "{uri}");
                send.send_response(text("first line\nsecond line\n"));
                log_served = true;
                logs_streamed += 1;
                if let Some(w) = pending_watch.take() {
                    let ev = json!({"type": "MODIFIED", "object": with_conditions(job.clone(), &[("Complete", "Done")])});
                    w.send_response(text(&format!("{ev}\n")));
                }
            } else {
                panic!("unexpected {method} {uri}");
            }
        }
        assert_eq!(logs_streamed, 4);
    });
    let mut o = opts(Duration::from_secs(30));
    o.logs = true;
    let done = submit(client, &spec(), &o).await.unwrap();
    assert_eq!(done.len(), 4);
    assert!(done.iter().all(|r| r.log_lines == 2), "{done:?}");
    finish(server).await;
}

#[tokio::test]
async fn an_unreachable_api_server_is_a_storage_error() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        let (_req, send) = h.next_request().await.expect("a request");
        send.send_error(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused (127.0.0.1:6443)",
        ));
    });
    let e = submit(client, &spec(), &opts(Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 5, "{e}");
    assert!(e.to_string().contains("demo-k8s-volume"), "{e}");
    finish(server).await;
}

const OTHER_HASH: &str = "0000000000000000000000000000000000000000";

/// Resume on the cluster: a resubmitted run keeps its complete stages, replaces the failed
/// stage's Job (deleted, gone, created anew) and runs the later ones.
#[tokio::test]
async fn resubmit_after_a_failure_resumes_from_the_failed_stage() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        claim_exists(&mut h, None).await;
        job_exists(&mut h, "download", &[("Complete", "Done")], None).await;
        job_exists(
            &mut h,
            "package-model",
            &[
                ("FailureTarget", "PodFailurePolicy"),
                ("Failed", "PodFailurePolicy"),
            ],
            None,
        )
        .await;
        job_deleted(&mut h, "package-model").await;
        for stage in &STAGES[1..] {
            job_completes(&mut h, stage).await;
        }
    });
    let done = submit(client, &spec(), &opts(Duration::from_secs(30)))
        .await
        .unwrap();
    let summary: Vec<_> = done
        .iter()
        .map(|r| (r.stage, r.created, r.replaced))
        .collect();
    assert_eq!(
        summary,
        [
            (Stage::Download, false, false),
            (Stage::PackageModel, true, true),
            (Stage::Stylize, true, false),
            (Stage::Upload, true, false),
        ]
    );
    finish(server).await;
}

/// A changed spec under the same run name is a conflict (exit 7) at the first Job from the old
/// spec — unless --force-stage: then every old Job is replaced, the forced stages (and only
/// they) get `--force`, and the claim is kept.
#[tokio::test]
async fn another_spec_needs_force_and_force_stage_replaces_from_there() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        claim_exists(&mut h, None).await;
        job_exists(
            &mut h,
            "download",
            &[("Complete", "Done")],
            Some(OTHER_HASH),
        )
        .await;
    });
    let e = submit(client, &spec(), &opts(Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 7, "{e}");
    assert!(e.to_string().contains("--force"), "{e}");
    finish(server).await;

    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        claim_exists(&mut h, Some(OTHER_HASH)).await;
        let mut posted = Vec::new();
        for stage in STAGES {
            job_exists(&mut h, stage, &[("Complete", "Done")], Some(OTHER_HASH)).await;
            job_deleted(&mut h, stage).await;
            posted.push(job_completes(&mut h, stage).await);
        }
        let args =
            |i: usize| posted[i]["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
        assert!(!args(0).contains("--force") && !args(1).contains("--force"));
        assert!(args(2).contains("--force") && args(3).contains("--force"));
    });
    let mut o = opts(Duration::from_secs(30));
    o.force.from = Some(Stage::Stylize);
    let done = submit(client, &spec(), &o).await.unwrap();
    assert!(done.iter().all(|r| r.replaced), "{done:?}");
    finish(server).await;

    // A plain submit after the forced one: the claim still carries the old spec's hash, the
    // Jobs this one's; everything is kept.
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        claim_exists(&mut h, Some(OTHER_HASH)).await;
        for stage in STAGES {
            job_exists(&mut h, stage, &[("Complete", "Done")], None).await;
        }
    });
    let done = submit(client, &spec(), &opts(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(done.iter().all(|r| !r.created), "{done:?}");
    finish(server).await;
}

/// A claim or Job of the run's name that kubestyle did not make is never adopted or replaced.
#[tokio::test]
async fn objects_kubestyle_did_not_make_are_left_alone() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        let (mut body, send) = expect(&mut h, Method::POST, "/persistentvolumeclaims").await;
        send.send_response(respond(
            StatusCode::CONFLICT,
            &status(409, "AlreadyExists", "exists"),
        ));
        let (_, send) = expect(
            &mut h,
            Method::GET,
            "/persistentvolumeclaims/demo-k8s-volume",
        )
        .await;
        body["metadata"]["labels"] = json!({"app": "someone-else"});
        send.send_response(respond(StatusCode::OK, &body));
    });
    let mut o = opts(Duration::from_secs(30));
    o.force.all = true;
    let e = submit(client, &spec(), &o).await.unwrap_err();
    assert_eq!(e.exit_code(), 7, "{e}");
    assert!(e.to_string().contains("not made by kubestyle"), "{e}");
    finish(server).await;
}

/// When the Job controller cannot create any pod (a missing ServiceAccount, a quota), its
/// FailedCreate events say why: exit 3 for what is missing, 5 for a refusal.
#[tokio::test]
async fn a_job_that_cannot_create_pods_is_reported() {
    for (message, code) in [
        (
            "Error creating: pods \"demo-k8s-download-\" is forbidden: error looking up service account kubestyle/kubestyle: serviceaccount \"kubestyle\" not found",
            3,
        ),
        (
            "Error creating: pods \"demo-k8s-download-x\" is forbidden: exceeded quota: compute, requested: memory=512Mi, used: memory=8Gi, limited: memory=8Gi",
            5,
        ),
    ] {
        let (client, mut h) = mock();
        let server = tokio::spawn(async move {
            claim_created(&mut h).await;
            let (_, watch) = download_running(&mut h, None).await;
            let (_, send) = expect(
                &mut h,
                Method::GET,
                "labelSelector=job-name%3Ddemo-k8s-download",
            )
            .await;
            send.send_response(respond(
                StatusCode::OK,
                &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
            ));
            let (_, send) = expect(
                &mut h,
                Method::GET,
                "fieldSelector=involvedObject.name%3Ddemo-k8s-download",
            )
            .await;
            send.send_response(respond(StatusCode::OK, &json!({"apiVersion": "v1", "kind": "EventList", "metadata": {}, "items": [
                {"metadata": {"name": "e1"}, "involvedObject": {"kind": "Job", "name": "demo-k8s-download"},
                 "reason": "FailedCreate", "type": "Warning", "message": message}]})));
            drop(watch);
        });
        let mut o = opts(Duration::from_secs(30));
        o.pod_check = Some(Duration::from_millis(100));
        let e = submit(client, &spec(), &o).await.unwrap_err();
        assert_eq!(e.exit_code(), code, "{e}");
        assert!(
            e.to_string()
                .contains("cannot create its pods: FailedCreate"),
            "{e}"
        );
        finish(server).await;
    }
}

/// An Indexed Job failing in one shard: the report names that shard's pod (the one the Job's
/// podFailurePolicy message names, not the newest), its exit code — and a log that cannot be
/// fetched (500) does not replace the report.
#[tokio::test]
async fn a_failed_shard_is_reported_even_when_its_log_is_gone() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        claim_created(&mut h).await;
        job_completes(&mut h, "download").await;
        job_completes(&mut h, "package-model").await;
        job_listed(&mut h, "stylize", |b| {
            let mut failed = with_conditions(b, &[("FailureTarget", "PodFailurePolicy")]);
            failed["status"]["conditions"][0]["message"] = json!(
                "Container stylize for pod kubestyle/demo-k8s-stylize-1-bbbbb failed with exit code 4 matching FailJob rule at index 0"
            );
            failed
        })
        .await;
        let (_, send) = expect(
            &mut h,
            Method::GET,
            "labelSelector=job-name%3Ddemo-k8s-stylize",
        )
        .await;
        let pod = |name: &str, index: &str, created: &str, state: Value| {
            json!({
            "metadata": {"name": name, "namespace": NS, "creationTimestamp": created,
                         "annotations": {"batch.kubernetes.io/job-completion-index": index}},
            "status": {"phase": if state.get("terminated").is_some() { "Failed" } else { "Running" },
                       "containerStatuses": [{"name": "stylize", "image": "i", "imageID": "", "ready": false,
                                              "restartCount": 0, "state": state}]}})
        };
        send.send_response(respond(
            StatusCode::OK,
            &json!({
            "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
                pod("demo-k8s-stylize-1-bbbbb", "1", "2026-11-22T08:00:00Z",
                    json!({"terminated": {"exitCode": 4, "reason": "Error"}})),
                pod("demo-k8s-stylize-0-aaaaa", "0", "2026-11-22T08:00:05Z",
                    json!({"running": {}})),
            ]}),
        ));
        let (_, send) = expect(&mut h, Method::GET, "/pods/demo-k8s-stylize-1-bbbbb/log").await;
        send.send_response(respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            &status(
                500,
                "InternalError",
                "Get \"https://10.0.0.9:10250/containerLogs/...\": dial tcp: connection refused",
            ),
        ));
    });
    let e = submit(client, &spec(), &opts(Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e}");
    let m = e.to_string();
    assert!(m.contains("stage stylize failed with exit code 4"), "{m}");
    assert!(m.contains("pod demo-k8s-stylize-1-bbbbb, shard 1"), "{m}");
    assert!(
        m.contains("log of pod demo-k8s-stylize-1-bbbbb unavailable: 500"),
        "{m}"
    );
    finish(server).await;
}

/// A Job deleted while it is followed is an error naming it (exit 3), not a wait until the
/// timeout.
#[tokio::test]
async fn a_job_deleted_while_watched_is_reported() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        claim_created(&mut h).await;
        let (mut body, watch) = download_running(&mut h, None).await;
        body["metadata"]["resourceVersion"] = json!("8");
        let event = json!({"type": "DELETED", "object": body});
        watch.send_response(text(&format!("{event}\n")));
    });
    let started = std::time::Instant::now();
    let e = submit(client, &spec(), &opts(Duration::from_secs(60)))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(e.exit_code(), 3, "{e}");
    assert!(
        e.to_string().contains("demo-k8s-download was deleted"),
        "{e}"
    );
    finish(server).await;
}

/// A pod that stays unschedulable (no node matches the GPU selector) past the pending timeout
/// stops the run with exit 3 and the scheduler's reason.
#[tokio::test]
async fn an_unschedulable_pod_is_reported_after_the_pending_timeout() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        claim_created(&mut h).await;
        let (_, watch) = download_running(&mut h, None).await;
        // The pods are listed every check until the pod has been pending past the grace;
        // then its events are read.
        loop {
            let (req, send) = tokio::time::timeout(Duration::from_secs(10), h.next_request())
                .await
                .expect("a request")
                .expect("client hung up");
            let uri = req.uri().to_string();
            if uri.contains("fieldSelector=involvedObject.name%3Ddemo-k8s-download-xyz") {
                send.send_response(respond(
                    StatusCode::OK,
                    &json!({"apiVersion": "v1", "kind": "EventList", "metadata": {}, "items": []}),
                ));
                break;
            }
            assert!(
                uri.contains("labelSelector=job-name%3Ddemo-k8s-download"),
                "{uri}"
            );
            send.send_response(respond(StatusCode::OK, &json!({
                "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
                    "metadata": {"name": "demo-k8s-download-xyz", "namespace": NS},
                    "spec": {"containers": [{"name": "download"}],
                             "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "demo-k8s-volume"}}]},
                    "status": {"phase": "Pending", "conditions": [{
                        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."}]}}]
            })));
        }
        // The claim is bound: not part of the reason.
        let (_, send) = expect(
            &mut h,
            Method::GET,
            "/persistentvolumeclaims/demo-k8s-volume",
        )
        .await;
        let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {"name": "demo-k8s-volume", "namespace": NS},
                       "spec": {}, "status": {"phase": "Bound"}});
        send.send_response(respond(StatusCode::OK, &claim));
        drop(watch);
    });
    let mut o = opts(Duration::from_secs(30));
    o.pod_check = Some(Duration::from_millis(100));
    o.pending_timeout = Duration::from_millis(150);
    let e = submit(client, &spec(), &o).await.unwrap_err();
    assert_eq!(e.exit_code(), 3, "{e}");
    let m = e.to_string();
    assert!(
        m.contains("pod demo-k8s-download-xyz has not started"),
        "{m}"
    );
    assert!(m.contains("Unschedulable: 0/3 nodes are available"), "{m}");
    finish(server).await;
}

/// `-n other`: every request goes to that namespace and every object is rendered for it
/// (a real API server refuses an object whose namespace differs from the request's).
#[tokio::test]
async fn the_namespace_flag_renders_objects_for_that_namespace() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        let (body, send) = expect(
            &mut h,
            Method::POST,
            "/api/v1/namespaces/other/persistentvolumeclaims",
        )
        .await;
        assert_eq!(body["metadata"]["namespace"], "other");
        send.send_response(respond(StatusCode::CREATED, &body));
        for _ in STAGES {
            let (body, send) =
                expect(&mut h, Method::POST, "/apis/batch/v1/namespaces/other/jobs").await;
            assert_eq!(body["metadata"]["namespace"], "other");
            send.send_response(respond(StatusCode::CREATED, &body));
            let (_, send) =
                expect(&mut h, Method::GET, "/apis/batch/v1/namespaces/other/jobs?").await;
            send.send_response(respond(
                StatusCode::OK,
                &job_list(vec![with_conditions(body, &[("Complete", "Done")])]),
            ));
        }
    });
    let mut o = opts(Duration::from_secs(30));
    o.namespace = Some("other".into());
    submit(client, &spec(), &o).await.unwrap();
    finish(server).await;
}

/// Volume problems: a pod scheduled but stuck attaching its volume (Multi-Attach on a
/// ReadWriteOnce claim) and a pod whose claim never binds (no StorageClass) are reported after
/// the pending timeout with the events' reasons and the claim's state (exit 3).
#[tokio::test]
async fn volume_problems_are_reported_with_their_events() {
    for (pod_events, claim_phase, claim_events, needles) in [
        (
            vec![(
                "FailedAttachVolume",
                "Multi-Attach error for volume \"pvc-1\" Volume is already used by pod(s) demo-k8s-stylize-0-aaaaa",
            )],
            "Bound",
            vec![],
            vec!["FailedAttachVolume: Multi-Attach error"],
        ),
        (
            vec![],
            "Pending",
            vec![(
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set",
            )],
            vec![
                "persistentvolumeclaim demo-k8s-volume is Pending (storage class none",
                "FailedBinding: no persistent volumes available",
            ],
        ),
    ] {
        let (client, mut h) = mock();
        let server = tokio::spawn(async move {
            claim_created(&mut h).await;
            let (_, watch) = download_running(&mut h, None).await;
            let events = |list: &[(&str, &str)]| {
                json!({"apiVersion": "v1", "kind": "EventList", "metadata": {}, "items":
                    list.iter().map(|(r, m)| json!({"metadata": {"name": "e"}, "involvedObject": {},
                                                     "reason": r, "message": m, "type": "Warning"})).collect::<Vec<_>>()})
            };
            while let Some((req, send)) = h.next_request().await {
                let uri = req.uri().to_string();
                let body = if uri.contains("labelSelector=job-name%3Ddemo-k8s-download") {
                    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
                        "metadata": {"name": "demo-k8s-download-xyz", "namespace": NS},
                        "spec": {"containers": [{"name": "download"}],
                                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "demo-k8s-volume"}}]},
                        "status": {"phase": "Pending", "containerStatuses": [{
                            "name": "download", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                            "state": {"waiting": {"reason": "ContainerCreating"}}}]}}]})
                } else if uri.contains("involvedObject.name%3Ddemo-k8s-download-xyz") {
                    events(&pod_events)
                } else if uri.contains("involvedObject.name%3Ddemo-k8s-volume") {
                    events(&claim_events)
                } else if uri.contains("/persistentvolumeclaims/demo-k8s-volume") {
                    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                           "metadata": {"name": "demo-k8s-volume", "namespace": NS},
                           "spec": {}, "status": {"phase": claim_phase}})
                } else {
                    panic!("unexpected {uri}");
                };
                send.send_response(respond(StatusCode::OK, &body));
            }
            drop(watch);
        });
        let mut o = opts(Duration::from_secs(30));
        o.pod_check = Some(Duration::from_millis(100));
        o.pending_timeout = Duration::from_millis(150);
        let e = submit(client, &spec(), &o).await.unwrap_err();
        assert_eq!(e.exit_code(), 3, "{e}");
        let m = e.to_string();
        assert!(
            m.contains("pod demo-k8s-download-xyz has not started"),
            "{m}"
        );
        for n in needles {
            assert!(m.contains(n), "{n:?} in {m}");
        }
        finish(server).await;
    }
}

/// Promise: `pipeline delete` deletes only what its lookup found to be the run's: each DELETE
/// carries the object's uid as a precondition (a Job replaced in between by someone else's of
/// the same name is left alone: the API server's 409 is exit 7), and a Job the lookup did not
/// find gets no DELETE at all.
#[tokio::test]
async fn delete_carries_the_looked_up_uid_and_skips_what_is_not_there() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        let owned = |stage: &str, uid: &str| {
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {
                "name": format!("demo-k8s-{stage}"), "namespace": NS, "uid": uid,
                "labels": {"app.kubernetes.io/managed-by": "kubestyle-pipeline",
                           "kubestyle.dev/run": "demo-k8s"}}})
        };
        // download: found, deleted with its uid.
        let (_, send) = expect(&mut h, Method::GET, "/jobs/demo-k8s-download").await;
        send.send_response(respond(StatusCode::OK, &owned("download", "uid-1")));
        let (body, send) = expect(&mut h, Method::DELETE, "/jobs/demo-k8s-download").await;
        assert_eq!(body["preconditions"]["uid"], "uid-1", "{body}");
        send.send_response(respond(StatusCode::OK, &status(200, "", "deleted")));
        // package-model: not there: no DELETE, the next lookup follows.
        let (_, send) = expect(&mut h, Method::GET, "/jobs/demo-k8s-package-model").await;
        send.send_response(respond(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound", "jobs.batch not found"),
        ));
        // stylize: replaced between the lookup and the DELETE: the precondition fails.
        let (_, send) = expect(&mut h, Method::GET, "/jobs/demo-k8s-stylize").await;
        send.send_response(respond(StatusCode::OK, &owned("stylize", "uid-3")));
        let (body, send) = expect(&mut h, Method::DELETE, "/jobs/demo-k8s-stylize").await;
        assert_eq!(body["preconditions"]["uid"], "uid-3", "{body}");
        send.send_response(respond(
            StatusCode::CONFLICT,
            &status(
                409,
                "Conflict",
                "Precondition failed: UID in precondition: uid-3",
            ),
        ));
    });
    let e = kubestyle_pipeline::submit::delete(client, NS, "demo-k8s", "demo-k8s-volume", true)
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 7, "{e}");
    assert!(e.to_string().contains("replaced"), "{e}");
    finish(server).await;
}
