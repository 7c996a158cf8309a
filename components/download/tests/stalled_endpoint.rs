//! `download` against endpoints that accept connections and then stall: it must give up with
//! exit 5 (storage), naming the endpoint, within a bounded time, and leave nothing on the
//! volume. No S3 server needed: the endpoints are plain TCP listeners on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use kubestyle_testkit::files;

/// Serve `respond` on every connection, then keep the socket open (never close, never answer
/// more). Returns the `host:port`.
fn stalling_server(respond: impl Fn(&str) -> Vec<u8> + Send + 'static) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&req).to_string();
            let _ = s.write_all(&respond(&head));
            let _ = s.flush();
            held.push(s);
        }
    });
    addr
}

fn run_download(addr: &str, extra: &[&str]) -> (Option<i32>, String, Duration, Vec<String>) {
    let vol = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_download"))
        .env("AWS_ENDPOINT_URL", format!("http://{addr}"))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .args(["--volume", vol.path().to_str().unwrap(), "--run-id", "t"])
        .args(extra)
        .arg("s3://bucket/dir/a.png")
        .output()
        .unwrap();
    let took = start.elapsed();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.code(), err, took, files(vol.path()))
}

/// What every stalled endpoint must give: exit 5 naming the endpoint, within the bound, and
/// nothing on the volume.
fn assert_gave_up(
    what: &str,
    addr: &str,
    run: (Option<i32>, String, Duration, Vec<String>),
) -> String {
    let (code, err, took, written) = run;
    eprintln!("{what}: exit {code:?} after {took:?}: {err}");
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains(addr), "stderr should name {addr}: {err}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(written.is_empty(), "wrote {written:?}");
    err
}

#[test]
fn silent_endpoint_gives_exit_5_naming_it() {
    // Accepts, reads the request, never answers.
    let addr = stalling_server(|_| Vec::new());
    let err = assert_gave_up(
        "silent endpoint",
        &addr,
        run_download(
            &addr,
            &[
                "--read-timeout",
                "2",
                "--connect-timeout",
                "2",
                "--max-attempts",
                "2",
            ],
        ),
    );
    assert!(!err.contains("testing"), "{err}");
}

#[test]
fn operation_timeout_bounds_all_attempts() {
    let addr = stalling_server(|_| Vec::new());
    let args = [
        "--read-timeout",
        "0",
        "--operation-timeout",
        "3",
        "--max-attempts",
        "10",
    ];
    assert_gave_up("operation timeout", &addr, run_download(&addr, &args));
}

/// A server that answers HEAD properly and every GET with the head and 10 bytes of a
/// 1000-byte object, then stalls; a ranged GET (`Range: bytes=N-`) gets 206 and the range when
/// `honour_range`, else a plain 200 with the object from its start.
fn ten_bytes_then_stall(honour_range: bool) -> String {
    stalling_server(move |req| {
        let from = req
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("range: bytes=")
                    .map(str::to_string)
            })
            .and_then(|r| r.trim_end_matches('-').parse::<u64>().ok());
        let head = match from {
            Some(n) if honour_range => format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {n}-999/1000\r\n",
                1000 - n
            ),
            _ => "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n".to_string(),
        };
        let mut r = format!(
            "{head}ETag: \"abc\"\r\nContent-Type: image/png\r\nLast-Modified: Wed, 25 Nov 2026 10:00:00 GMT\r\n\r\n"
        )
        .into_bytes();
        if req.starts_with("GET") {
            r.extend_from_slice(&[7u8; 10]);
        }
        r
    })
}

#[test]
fn body_stalled_mid_way_gives_exit_5_and_no_file() {
    let addr = ten_bytes_then_stall(true);
    let args = [
        "--read-timeout",
        "2",
        "--max-attempts",
        "2",
        "--max-resumes",
        "1",
    ];
    let err = assert_gave_up("stalled body", &addr, run_download(&addr, &args));
    // Resumed once at byte 10 (206), stalled again at byte 20.
    assert!(err.contains("giving up at byte 20"), "{err}");
}

/// A resume the endpoint answers with the whole object (200, no Content-Range) must not be
/// spliced after the bytes already written: exit 6, no file.
#[test]
fn a_resume_answered_without_its_range_is_not_spliced() {
    let addr = ten_bytes_then_stall(false);
    let (code, err, _, written) = run_download(
        &addr,
        &[
            "--read-timeout",
            "2",
            "--max-attempts",
            "2",
            "--max-resumes",
            "1",
        ],
    );
    assert_eq!(code, Some(6), "{err}");
    assert!(err.contains("refusing to splice"), "{err}");
    assert!(written.is_empty(), "wrote {written:?}");
}

#[test]
fn bad_timeout_is_a_usage_error() {
    let addr = stalling_server(|_| Vec::new());
    let (code, err, _, _) = run_download(&addr, &["--read-timeout", "-1"]);
    assert_eq!(code, Some(2), "{err}");
}
