//! `stylize serve` over real HTTP on the trained MultiStyle26 network: every protocol's answer
//! is byte-identical to the file the batch stage writes; errors have their documented statuses;
//! a full queue answers 503 with `Retry-After`; SIGTERM drains and exits 143; the bearer token
//! is enforced and never logged; the README's commands work.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use kubestyle_testkit::assets;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A volume with the packaged MultiStyle26 network (`<vol>/runs/t/models/multistyle26`) and
/// test images in `<vol>/img`: odd-sized RGB PNG, RGBA PNG with gradient alpha, a JPEG, and a
/// 512² JPEG (`big/`, for slow requests).
fn volume() -> (tempfile::TempDir, PathBuf) {
    let vol = tempfile::tempdir().unwrap();
    let a = assets();
    common::package_multistyle26(vol.path());
    let img = vol.path().join("img");
    let big = vol.path().join("big");
    std::fs::create_dir_all(&img).unwrap();
    std::fs::create_dir_all(&big).unwrap();
    let chelsea = image::open(a.join("chelsea.png")).unwrap();
    chelsea
        .resize_exact(97, 61, image::imageops::FilterType::Triangle)
        .save(img.join("odd.png"))
        .unwrap();
    let mut rgba = chelsea
        .resize_exact(80, 60, image::imageops::FilterType::Triangle)
        .to_rgba8();
    for (x, _, p) in rgba.enumerate_pixels_mut() {
        p[3] = (x * 3) as u8;
    }
    rgba.save(img.join("alpha.png")).unwrap();
    chelsea
        .resize_exact(120, 80, image::imageops::FilterType::Triangle)
        .to_rgb8()
        .save(img.join("photo.jpg"))
        .unwrap();
    for side in [512, 1024] {
        let name = if side == 512 { "big.jpg" } else { "huge.jpg" };
        chelsea
            .resize_exact(side, side, image::imageops::FilterType::Triangle)
            .to_rgb8()
            .save(big.join(name))
            .unwrap();
    }
    let pkg = vol.path().join("runs/t/models/multistyle26");
    assert!(pkg.join("model.json").exists());
    (vol, pkg)
}

/// A running `stylize serve` on a free port; killed when dropped.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(pkg: &Path, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serve.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_stylize"))
            .arg("serve")
            .arg("--package")
            .arg(pkg)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let base = wait_listening(&mut child, &log);
        Server {
            child,
            base,
            log,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The address from the server's "listening on http://…" line.
fn wait_listening(child: &mut Child, log: &Path) -> String {
    let t0 = Instant::now();
    loop {
        if let Ok(f) = std::fs::File::open(log) {
            for line in BufReader::new(f).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    return rest.split_whitespace().next().unwrap().to_string();
                }
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "stylize serve exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// (status, headers, body) of a request.
struct Reply {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `{"error": …}` of an error answer.
    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {}", self.json()))
            .to_string()
    }
}

fn reply(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let mut r = r.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_vec()
        .unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

fn get(url: &str) -> Reply {
    reply(agent().get(url).call())
}

fn post(url: &str, body: &[u8]) -> Reply {
    reply(agent().post(url).send(body))
}

fn post_json(url: &str, body: &Value) -> Reply {
    reply(
        agent()
            .post(url)
            .header("Content-Type", "application/json")
            .send(serde_json::to_vec(body).unwrap().as_slice()),
    )
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn unb64(s: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s.as_str().unwrap())
        .unwrap()
}

/// Run the batch stage on `<vol>/img` with `styles` and `extra`, into `<vol>/<out>`.
fn batch(vol: &Path, pkg: &Path, out: &str, styles: &[&str], extra: &[&str]) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stylize"));
    c.args(["--volume", vol.to_str().unwrap(), "--run-id", out])
        .arg("--package")
        .arg(pkg)
        .arg("--image")
        .arg(vol.join("img"))
        .args(["--out", out]);
    for s in styles {
        c.args(["--style", s]);
    }
    let o = c.args(extra).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The batch stage's output for image `name` (its output suffix `ext`) in style `label`.
fn batch_file(vol: &Path, out: &str, label: &str, stem: &str, ext: &str) -> Vec<u8> {
    std::fs::read(vol.join(format!("{out}/multistyle26/{label}/{stem}.{ext}"))).unwrap()
}

const IMAGES: [(&str, &str); 3] = [("odd", "png"), ("alpha", "png"), ("photo", "jpg")];

/// Promise: for every kind of image and style (index, name, blend, with controls), the plain, V2 and V1 answers
/// are byte for byte the file the batch stage writes — also with the batch stage's options
/// (exact tiling above `--tile-above`, `--max-size`, `--format`) given to both.
#[test]
fn every_protocol_answers_what_the_batch_stage_writes() {
    let (vol, pkg) = volume();
    let vol = vol.path();
    let styles = [
        ("7", "style-07"),
        ("style-19", "style-19"),
        ("3:0.5,12:0.5", "style-03@0.50+style-12@0.50"),
        // The style controls, applied as the batch stage applies them.
        (
            "3:0.5,12:0.5~preserve-colour~strength=0.6",
            "style-03@0.50+style-12@0.50~preserve-colour~strength=0.60",
        ),
    ];
    let specs: Vec<&str> = styles.iter().map(|s| s.0).collect();
    batch(vol, &pkg, "plain", &specs, &[]);
    let server = Server::start(&pkg, &[]);
    for (stem, ext) in IMAGES {
        let input = std::fs::read(vol.join(format!("img/{stem}.{ext}"))).unwrap();
        for (spec, label) in styles {
            let want = batch_file(vol, "plain", label, stem, ext);
            let q: String = url_encode(spec);
            let r = post(&server.url(&format!("/stylize?style={q}")), &input);
            assert_eq!(
                r.status,
                200,
                "{stem} {spec}: {}",
                String::from_utf8_lossy(&r.body)
            );
            let mime = if ext == "png" {
                "image/png"
            } else {
                "image/jpeg"
            };
            assert_eq!(r.headers["content-type"], mime);
            assert!(
                r.body == want,
                "plain POST {stem} × {spec} differs from the batch output"
            );

            let v2 = post_json(
                &server.url("/v2/models/multistyle26/infer"),
                &json!({"id": "r1", "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                    "data": [b64(&input)]}], "parameters": {"style": spec}}),
            );
            assert_eq!(v2.status, 200, "{}", String::from_utf8_lossy(&v2.body));
            let v = v2.json();
            assert_eq!(
                (v["model_name"].as_str(), v["id"].as_str()),
                (Some("multistyle26"), Some("r1"))
            );
            let out = &v["outputs"][0];
            assert_eq!(
                (out["datatype"].as_str(), &out["shape"]),
                (Some("BYTES"), &json!([1]))
            );
            assert_eq!(out["parameters"]["content_type"], mime);
            assert!(unb64(&out["data"][0]) == want, "V2 {stem} × {spec} differs");

            let v1 = post_json(
                &server.url("/v1/models/multistyle26:predict"),
                &json!({"instances": [{"b64": b64(&input), "style": spec}]}),
            );
            assert_eq!(v1.status, 200, "{}", String::from_utf8_lossy(&v1.body));
            assert!(
                unb64(&v1.json()["predictions"][0]["b64"]) == want,
                "V1 {stem} × {spec} differs"
            );
        }
    }
    // Two images in one V2 tensor, and V1's style for every instance from `parameters`.
    let a = std::fs::read(vol.join("img/odd.png")).unwrap();
    let b = std::fs::read(vol.join("img/photo.jpg")).unwrap();
    let v2 = post_json(
        &server.url("/v2/models/multistyle26/infer"),
        &json!({"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
            "data": [b64(&a), b64(&b)], "parameters": {"style": 7}}]}),
    );
    let data = &v2.json()["outputs"][0]["data"];
    assert!(unb64(&data[0]) == batch_file(vol, "plain", "style-07", "odd", "png"));
    assert!(unb64(&data[1]) == batch_file(vol, "plain", "style-07", "photo", "jpg"));
    let v1 = post_json(
        &server.url("/v1/models/multistyle26:predict"),
        &json!({"instances": [{"b64": b64(&b)}], "parameters": {"style": "style-19"}}),
    );
    assert!(
        unb64(&v1.json()["predictions"][0]["b64"])
            == batch_file(vol, "plain", "style-19", "photo", "jpg")
    );
    // No style: style 0, as the batch stage.
    batch(vol, &pkg, "zero", &[], &[]);
    let r = post(&server.url("/stylize"), &b);
    assert!(r.body == batch_file(vol, "zero", "style-00", "photo", "jpg"));
    drop(server);

    // The batch options that shape the result, given to both: exact tiling (every image is
    // above 2048 pixels), --max-size, --format png.
    let opts = [
        "--tile-above",
        "2048",
        "--max-size",
        "90",
        "--format",
        "png",
    ];
    batch(vol, &pkg, "tiled", &["7"], &opts);
    let server = Server::start(&pkg, &opts);
    for (stem, ext) in IMAGES {
        let input = std::fs::read(vol.join(format!("img/{stem}.{ext}"))).unwrap();
        let r = post(&server.url("/stylize?style=7"), &input);
        assert_eq!(r.headers["content-type"], "image/png");
        let want = batch_file(vol, "tiled", "style-07", stem, "png");
        assert!(r.body == want, "tiled {stem} differs from the batch output");
    }
}

/// `3:0.5,12:0.5` as a query value.
fn url_encode(s: &str) -> String {
    s.replace(':', "%3A")
        .replace(',', "%2C")
        .replace('=', "%3D")
}

/// A PNG whose header says `w`×`h` and whose data is cut short: only a decoder that looks at
/// the header first can tell it is too large rather than broken.
fn png_bomb_header(w: u32, h: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32(&ihdr).to_be_bytes());
    png.extend(100u32.to_be_bytes());
    png.extend(b"IDAT\x78\x9c");
    png
}

/// Promise: health, readiness and metadata answer as the Open Inference Protocol says; every
/// bad request gets its documented status and a `{"error": …}` that says what is wrong;
/// limits are checked before decoding; /metrics counts what happened.
#[test]
fn protocol_metadata_errors_limits_and_metrics() {
    let (vol, pkg) = volume();
    let server = Server::start(
        &pkg,
        &["--max-pixels", "10000", "--max-body-bytes", "200000"],
    );
    let u = |p: &str| server.url(p);
    assert_eq!(get(&u("/v2/health/live")).json(), json!({"live": true}));
    assert_eq!(get(&u("/v2/health/ready")).json(), json!({"ready": true}));
    let meta = get(&u("/v2")).json();
    assert_eq!(
        (meta["name"].as_str(), &meta["models"]),
        (Some("kubestyle"), &json!(["multistyle26"]))
    );
    let m = get(&u("/v2/models/multistyle26")).json();
    assert_eq!(m["name"], "multistyle26");
    assert_eq!(m["inputs"][0]["datatype"], "BYTES");
    assert_eq!(m["parameters"]["styles"].as_array().unwrap().len(), 26);
    assert_eq!(
        get(&u("/v2/models/multistyle26/ready")).json()["ready"],
        true
    );
    assert_eq!(get(&u("/v1/models/multistyle26")).json()["ready"], true);

    let photo = std::fs::read(vol.path().join("img/odd.png")).unwrap();
    let v2 = |body: Value| post_json(&u("/v2/models/multistyle26/infer"), &body);
    let tensor = |data: Value| json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": data}]});
    let cases: Vec<(Reply, u16, &str)> = vec![
        (get(&u("/v2/models/nope")), 404, "nope"),
        (get(&u("/v2/models/nope/ready")), 404, "nope"),
        (post(&u("/v2/models/nope/infer"), b"{}"), 404, "nope"),
        (post(&u("/v1/models/nope:predict"), b"{}"), 404, "nope"),
        (post(&u("/v1/models/multistyle26"), b"{}"), 404, ":predict"),
        (post(&u("/stylize?model=nope"), &photo), 404, "nope"),
        (get(&u("/no/such/path")), 404, "/no/such/path"),
        (get(&u("/stylize")), 405, "GET"),
        (
            post(&u("/v2/models/multistyle26/infer"), b"{not json"),
            400,
            "invalid JSON",
        ),
        (v2(json!({"inputs": []})), 400, "one input"),
        (v2(tensor(json!(["%%%"]))), 400, "base64"),
        (
            v2(
                json!({"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": [0.5]}]}),
            ),
            400,
            "BYTES",
        ),
        (
            post_json(
                &u("/v1/models/multistyle26:predict"),
                &json!({"instances": []}),
            ),
            400,
            "empty",
        ),
        (post(&u("/stylize?style=26"), &photo), 400, "0 to 25"),
        (
            post(&u("/stylize?style=nope"), &photo),
            400,
            "unknown style",
        ),
        (post(&u("/stylize?colour=red"), &photo), 400, "colour"),
        (post(&u("/stylize"), b""), 400, "empty"),
        (
            post(&u("/stylize"), b"hello, not an image"),
            415,
            "not an image",
        ),
        (v2(tensor(json!([b64(b"GIF89a broken")]))), 415, "the image"),
        // Over --max-pixels (12,000 pixels): from the header, before decoding.
        (
            post(&u("/stylize"), &png_bomb_header(120, 100)),
            413,
            "above the limit",
        ),
        (
            post(&u("/stylize"), &png_bomb_header(60_000, 60_000)),
            413,
            "above the limit",
        ),
        (
            post(&u("/stylize"), &vec![0u8; 300_000]),
            413,
            "max-body-bytes",
        ),
        (
            v2(tensor(json!([b64(&vec![0u8; 200_000])]))),
            413,
            "max-body-bytes",
        ),
        // Far over the limit: the client is still writing when the answer is ready. The
        // server reads the rest (up to its drain cap) so that the client gets the 413, not a
        // broken pipe or a reset.
        (
            post(&u("/stylize"), &vec![0u8; 12 << 20]),
            413,
            "max-body-bytes",
        ),
        (
            post(&u("/v2/models/multistyle26/infer"), &vec![b' '; 12 << 20]),
            413,
            "max-body-bytes",
        ),
        (
            post(&u("/v2/models/nope/infer"), &vec![0u8; 12 << 20]),
            404,
            "nope",
        ),
    ];
    for (r, status, says) in &cases {
        assert_eq!(
            r.status,
            *status,
            "{says}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.headers["content-type"], "application/json");
        let e = r.error();
        assert!(e.contains(says), "{status}: {e:?} does not say {says:?}");
        assert!(
            !e.contains("kubestyle-serve-"),
            "a temp file name leaked: {e}"
        );
    }
    // Binary-data extension: bad framing is a 400 naming what is wrong, never a panic.
    let binary = |header: &str, body: &[u8]| {
        reply(
            agent()
                .post(&u("/v2/models/multistyle26/infer"))
                .header("Inference-Header-Content-Length", header)
                .send(body),
        )
    };
    let head = |size: usize| {
        format!(
            r#"{{"inputs":[{{"name":"image","shape":[1],"datatype":"BYTES","parameters":{{"binary_data_size":{size}}}}}]}}"#
        )
    };
    for (header, body, says) in [
        ("10".to_string(), b"{}".to_vec(), "over the body"),
        ("x".to_string(), b"{}".to_vec(), "not a byte count"),
        (
            head(100).len().to_string(),
            format!("{}\x05\0\0\0abc", head(100)).into_bytes(),
            "over the",
        ),
        (
            head(7).len().to_string(),
            format!("{}\x05\0\0\0abc", head(7)).into_bytes(),
            "over the 3 left",
        ),
        (
            head(4).len().to_string(),
            format!("{}\0\0\0\0xyz", head(4)).into_bytes(),
            "belong to no input",
        ),
        (
            "2".to_string(),
            b"{}trailing".to_vec(),
            "invalid JSON request",
        ),
    ] {
        let r = binary(&header, &body);
        assert_eq!(
            r.status,
            400,
            "{says}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            r.error().contains(says),
            "{:?} does not say {says:?}",
            r.error()
        );
    }
    // The server is still fine after all that.
    assert_eq!(post(&u("/stylize?style=3"), &photo).status, 200);

    let m = String::from_utf8(get(&u("/metrics")).body).unwrap();
    let count = |route: &str, status: u16| -> u64 {
        let prefix = format!(
            "kubestyle_serve_requests_total{{route=\"{route}\",method=\"POST\",status=\"{status}\"}} "
        );
        m.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    let expected_413 = cases
        .iter()
        .filter(|(r, s, _)| *s == 413 && r.status == 413)
        .count() as u64;
    assert_eq!(
        count("/stylize", 413) + count("/v2/models/{model}/infer", 413),
        expected_413,
        "{m}"
    );
    assert_eq!(count("/stylize", 200), 1, "{m}");
    assert_eq!(count("/stylize", 415), 1, "{m}");
    for name in [
        "kubestyle_serve_request_duration_seconds_bucket{le=",
        "kubestyle_serve_queue_depth 0",
        "kubestyle_serve_in_flight 0",
    ] {
        assert!(m.contains(name), "{name} missing: {m}");
    }
    // Every request was logged with its route and status.
    let log = server.log();
    assert!(
        log.contains("route=\"/stylize\"") && log.contains("status=413"),
        "{log}"
    );
}

fn in_flight(server: &Server) -> i64 {
    let m = String::from_utf8(get(&server.url("/metrics")).body).unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix("kubestyle_serve_in_flight "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Promise: with every lane busy and the queue full, a request is answered 503 with
/// `Retry-After` at once, and every request is answered (200 or 503), none lost; a request
/// past `--timeout-s` gets 504.
#[test]
fn a_full_queue_answers_503_with_retry_after_and_timeouts_504() {
    let (vol, pkg) = volume();
    // 1024²: each forward pass long enough that all six requests arrive while the first runs.
    let big = std::fs::read(vol.path().join("big/huge.jpg")).unwrap();
    let server = Server::start(&pkg, &["--lanes", "1", "--queue", "1"]);
    let url = server.url("/stylize?style=7");
    let n = 6;
    let replies: Vec<(Reply, Duration)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    let t0 = Instant::now();
                    (post(&url, &big), t0.elapsed())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: Vec<&(Reply, Duration)> = replies.iter().filter(|(r, _)| r.status == 200).collect();
    let busy: Vec<&(Reply, Duration)> = replies.iter().filter(|(r, _)| r.status == 503).collect();
    assert_eq!(
        ok.len() + busy.len(),
        n,
        "every request answered 200 or 503"
    );
    assert!(ok.len() >= 2, "one running and one queued are served");
    assert!(
        ok.len() <= 2 + 1,
        "lanes 1 + queue 1 (+1 at most for one finishing early)"
    );
    assert!(!busy.is_empty());
    let slowest_ok = ok.iter().map(|(_, d)| *d).max().unwrap();
    for (r, d) in &busy {
        assert_eq!(r.headers["retry-after"], "1");
        assert!(r.error().contains("queue is full"), "{}", r.error());
        assert!(
            *d < slowest_ok,
            "a 503 is answered at once ({d:?} vs {slowest_ok:?})"
        );
    }
    drop(server);

    let server = Server::start(&pkg, &["--lanes", "1", "--timeout-s", "0.05"]);
    let r = post(&server.url("/stylize?style=7"), &big);
    assert_eq!(r.status, 504, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.error().contains("0.05 s"), "{}", r.error());
}

/// Promise: on SIGTERM the server stops taking connections, finishes the request in flight
/// (its answer is the full image) and exits 143.
#[test]
fn sigterm_finishes_in_flight_requests_and_exits_143() {
    let (vol, pkg) = volume();
    let big = std::fs::read(vol.path().join("big/big.jpg")).unwrap();
    let mut server = Server::start(&pkg, &["--lanes", "1"]);
    let url = server.url("/stylize?style=7");
    let (r, status, after) = std::thread::scope(|s| {
        let h = s.spawn(|| post(&url, &big));
        let t0 = Instant::now();
        while in_flight(&server) == 0 {
            assert!(t0.elapsed() < Duration::from_secs(30), "never in flight");
            std::thread::sleep(Duration::from_millis(5));
        }
        let pid = server.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        std::thread::sleep(Duration::from_millis(100));
        // A new connection is no longer taken.
        let after = agent().get(&server.url("/v2/health/live")).call();
        let r = h.join().unwrap();
        let status = server.child.wait().unwrap();
        (r, status, after)
    });
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let img = image::load_from_memory(&r.body).unwrap();
    assert_eq!((img.width(), img.height()), (512, 512));
    assert!(after.is_err(), "a connection after SIGTERM was served");
    assert_eq!(status.code(), Some(143), "{}", server.log());
    let log = server.log();
    assert!(log.contains("drained"), "{log}");
}

/// Promise: with `--token-file`, every route but the health probes needs the bearer token;
/// the token never appears in the logs.
#[test]
fn the_bearer_token_is_required_and_never_logged() {
    let (vol, pkg) = volume();
    let token = "tok-5b1e0c9d7a";
    let file = vol.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let server = Server::start(&pkg, &["--token-file", file.to_str().unwrap()]);
    let photo = std::fs::read(vol.path().join("img/odd.png")).unwrap();
    let url = server.url("/stylize?style=7");
    let with = |auth: &str| {
        reply(
            agent()
                .post(&url)
                .header("Authorization", auth)
                .send(photo.as_slice()),
        )
    };
    let none = post(&url, &photo);
    assert_eq!(none.status, 401);
    assert_eq!(none.headers["www-authenticate"], "Bearer");
    assert_eq!(with("Bearer wrong").status, 401);
    assert_eq!(with(&format!("Basic {token}")).status, 401);
    // A large upload without the token still gets its 401 (the unread body is drained).
    for _ in 0..3 {
        assert_eq!(post(&url, &vec![0u8; 12 << 20]).status, 401);
    }
    assert_eq!(with(&format!("Bearer {token}")).status, 200);
    assert_eq!(get(&server.url("/v2/models/multistyle26")).status, 401);
    assert_eq!(get(&server.url("/v2/health/ready")).status, 200);
    assert_eq!(get(&server.url("/v2/health/live")).status, 200);
    let log = server.log();
    assert!(
        log.contains("status=401") && log.contains("status=200"),
        "{log}"
    );
    assert!(!log.contains(token), "the token is in the log: {log}");
}

/// The README's "Serving" commands (between its `serve-commands` markers), run as written in
/// a scratch directory with the repository's `examples/` and `.cache/`: only the port (8080 →
/// a free one) and the binaries' directory (`target/debug` → this build's) are replaced. The
/// package-model line runs through its library with the same arguments. The styled image must
/// be the batch stage's.
#[test]
fn the_readme_serving_commands_work() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let block = readme
        .split("<!-- serve-commands -->")
        .nth(1)
        .expect("README has a serve-commands block");
    let lines: Vec<&str> = block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("```") && !l.starts_with('#'))
        .collect();
    assert!(lines.len() >= 4, "{lines:?}");
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::os::unix::fs::symlink(repo().join("examples"), work.join("examples")).unwrap();
    std::os::unix::fs::symlink(assets().parent().unwrap(), work.join(".cache")).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let bin = Path::new(env!("CARGO_BIN_EXE_stylize")).parent().unwrap();
    let fix = |l: &str| {
        l.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
            .replace("localhost:8080", &format!("localhost:{port}"))
            .replace("target/debug/", &format!("{}/", bin.display()))
    };
    let mut server: Option<Server> = None;
    for line in &lines {
        let line = fix(line);
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("mkdir ") {
            let s = Command::new("bash")
                .args(["-o", "pipefail", "-c", &line])
                .current_dir(work)
                .status()
                .unwrap();
            assert!(s.success(), "{line}");
        } else if words[0].ends_with("/package-model") {
            use clap::Parser;
            let argv: Vec<String> = words
                .iter()
                .map(|w| {
                    if w.starts_with('.') {
                        work.join(w).display().to_string()
                    } else {
                        w.to_string()
                    }
                })
                .collect();
            kubestyle_package_model::run(kubestyle_package_model::Args::parse_from(argv)).unwrap();
        } else if words[0].ends_with("/stylize") && words.get(1) == Some(&"serve") {
            assert_eq!(
                words.last(),
                Some(&"&"),
                "the server line runs in the background"
            );
            let log = work.join("serve.log");
            let mut child = Command::new(words[0])
                .args(&words[1..words.len() - 1])
                .current_dir(work)
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let base = wait_listening(&mut child, &log);
            assert_eq!(base, format!("http://127.0.0.1:{port}"));
            server = Some(Server {
                child,
                base,
                log,
                _dir: tempfile::tempdir().unwrap(),
            });
        } else {
            assert!(
                words[0] == "curl",
                "a README line this test does not know: {line}"
            );
            assert!(server.is_some(), "curl before the server: {line}");
            let o = Command::new("bash")
                .args(["-o", "pipefail", "-c", &line])
                .current_dir(work)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{line}: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    let server = server.expect("the README starts a server");
    // What the README's curl wrote is the batch stage's output.
    let pkg = work.join(".kubestyle/volume/runs/serve/models/multistyle26");
    let vol = work.join(".kubestyle/volume");
    let o = Command::new(env!("CARGO_BIN_EXE_stylize"))
        .args([
            "--volume",
            vol.to_str().unwrap(),
            "--run-id",
            "check",
            "--style",
            "7",
        ])
        .arg("--package")
        .arg(&pkg)
        .arg("--image")
        .arg(repo().join("examples/images/chelsea.jpg"))
        .args(["--out", "check"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = std::fs::read(vol.join("check/multistyle26/style-07/chelsea.jpg")).unwrap();
    let got =
        std::fs::read(work.join("chelsea-7.jpg")).expect("the README's curl writes chelsea-7.jpg");
    assert!(
        got == want,
        "the README's styled image differs from the batch stage's"
    );
    let blend = std::fs::read(work.join("chelsea-blend.jpg"))
        .expect("the V1 example writes chelsea-blend.jpg");
    assert!(image::load_from_memory(&blend).is_ok());
    drop(server);
}

/// The command line `pipeline render --serve` gives the serving pods (its committed snapshots)
/// parses in `stylize serve`, with the package where package-model puts it: a flag renamed here
/// and not there fails this test.
#[test]
fn the_rendered_serving_command_line_parses() {
    use clap::Parser;
    use kubestyle_stylize::serve::ServeArgs;
    let dir = repo().join("pipeline/src/snapshots");
    for snap in [
        "kubestyle_pipeline__serve__tests__serve_deployment.snap",
        "kubestyle_pipeline__serve__tests__serve_kserve.snap",
    ] {
        let text = std::fs::read_to_string(dir.join(snap)).unwrap();
        let args: Vec<String> = text
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("- args:"))
            .skip(1)
            .take_while(|l| l.trim_start().starts_with("- "))
            .map(|l| {
                l.trim_start()
                    .trim_start_matches("- ")
                    .trim_matches('\'')
                    .to_string()
            })
            .collect();
        assert_eq!(args.first().map(String::as_str), Some("serve"), "{snap}");
        let parsed = ServeArgs::try_parse_from(&args).unwrap_or_else(|e| panic!("{snap}: {e}"));
        assert_eq!(
            parsed.packages,
            vec![PathBuf::from("/data/runs/demo-k8s/models/multistyle26")]
        );
        assert_eq!(parsed.listen.port(), 8080);
        assert_eq!(parsed.max_size, Some(1024));
    }
}

/// Promise: the V2 binary-data extension as Triton's own HTTP client speaks it (tritonclient,
/// `tests/oip_client.py`): the image in as raw `BYTES` or base64 JSON, the styled image out as
/// raw bytes or base64 JSON — each answer byte for byte the batch stage's file.
#[test]
fn tritons_client_speaks_the_binary_data_extension_with_us() {
    let python = std::env::var_os("KUBESTYLE_PYTHON")
        .map(PathBuf::from)
        .expect("KUBESTYLE_PYTHON (the test venv's Python with tritonclient) is not set: run scripts/test.sh");
    let (vol, pkg) = volume();
    let vol = vol.path();
    let (spec, label) = (
        "3:0.5,12:0.5~preserve-colour~strength=0.6",
        "style-03@0.50+style-12@0.50~preserve-colour~strength=0.60",
    );
    batch(vol, &pkg, "plain", &[spec], &[]);
    let server = Server::start(&pkg, &[]);
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oip_client.py");
    for (stem, ext) in IMAGES {
        let want = batch_file(vol, "plain", label, stem, ext);
        for (input, output) in [("binary", "binary"), ("json", "binary"), ("binary", "json")] {
            let got = vol.join(format!("triton-{stem}-{input}-{output}.{ext}"));
            let out = Command::new(&python)
                .arg(&client)
                .args([&server.base, "multistyle26", spec])
                .arg(vol.join(format!("img/{stem}.{ext}")))
                .arg(&got)
                .args(["--input", input, "--output", output])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{stem} {input}→{output}: {}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                server.log()
            );
            assert!(
                std::fs::read(&got).unwrap() == want,
                "tritonclient {input} in, {output} out: {stem} differs from the batch output"
            );
        }
    }
}
