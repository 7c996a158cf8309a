//! A fault-injecting HTTP/1.1 proxy for the S3 tests (issue #12): it sits between the SDK and
//! moto on 127.0.0.1, forwards every request verbatim (a fresh upstream connection per request,
//! so SigV4 signatures stay valid) and, for the requests a [`Rule`] matches, injects a fault:
//!
//! * [`Fault::Status500`] and [`Fault::SlowDown503`]: an S3 XML error instead of forwarding;
//! * [`Fault::ResetMidBody`], [`Fault::StallMidBody`], [`Fault::TruncatedBody`]: on the body
//!   that carries the data — the request's for uploads (PUT, parts), the response's otherwise
//!   (GET) — half of it passes, then the connection is reset (RST), goes silent, or is closed
//!   (FIN) although the Content-Length promised more;
//! * [`Fault::CorruptBody`]: one byte in the middle of the request body is flipped on its way to
//!   the server (what a bad NIC or middlebox would do);
//! * [`Fault::Delay`]: the request is held before it is forwarded.
//!
//! Every injection is counted ([`FaultProxy::injected`]) so that a test can print how many faults
//! it survived. Plain blocking threads: no runtime, usable from sync and async tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to do to a matched exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `500 InternalError` (S3 XML body); the request never reaches the server.
    Status500,
    /// `503 SlowDown` (S3 XML body); the request never reaches the server.
    SlowDown503,
    /// Half the data body, then a TCP reset.
    ResetMidBody,
    /// Half the data body, then silence (the connection stays open).
    StallMidBody,
    /// Half the data body, then an orderly close although Content-Length promised more.
    TruncatedBody,
    /// Flip one byte in the middle of the data body (the request's if it has one, else the
    /// response's), pass the rest untouched.
    CorruptBody,
    /// Hold the request this long, then forward it untouched.
    Delay(Duration),
    /// Answer `200 OK` with this XML body instead of forwarding (a hostile or buggy server's
    /// answer: a listing of keys outside the prefix, sizes no object has).
    Answer(&'static str),
}

impl Fault {
    /// The faults a transfer must survive when injected once, and fail cleanly on when
    /// injected every time.
    pub const TRANSIENT: [Fault; 5] = [
        Fault::Status500,
        Fault::SlowDown503,
        Fault::ResetMidBody,
        Fault::StallMidBody,
        Fault::TruncatedBody,
    ];
}

/// What a rule sees of a request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent (percent-encoded).
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }

    /// Path-style request for `key` (any method), e.g. `/bucket/dir/a.png`.
    pub fn is_key(&self, bucket: &str, key: &str) -> bool {
        self.path() == format!("/{bucket}/{}", encode_key(key))
    }

    /// `UploadPart` (a PUT with `partNumber=`).
    pub fn is_upload_part(&self) -> bool {
        self.method == "PUT" && self.query().contains("partNumber=")
    }

    /// `CompleteMultipartUpload` (a POST with `uploadId=`).
    pub fn is_complete_multipart(&self) -> bool {
        self.method == "POST" && self.query().contains("uploadId=")
    }
}

/// Percent-encode a key the way the SDK does in a path (`/` kept).
pub fn encode_key(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

type Matcher = Box<dyn Fn(&Request) -> bool + Send + Sync>;

/// Inject `fault` into the next `times` requests `matches` accepts.
pub struct Rule {
    pub fault: Fault,
    pub matches: Matcher,
    /// How many more times; `usize::MAX` is "every time".
    pub times: usize,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("fault", &self.fault)
            .field("times", &self.times)
            .finish_non_exhaustive()
    }
}

impl Rule {
    pub fn once(fault: Fault, matches: impl Fn(&Request) -> bool + Send + Sync + 'static) -> Rule {
        Rule {
            fault,
            matches: Box::new(matches),
            times: 1,
        }
    }

    pub fn always(
        fault: Fault,
        matches: impl Fn(&Request) -> bool + Send + Sync + 'static,
    ) -> Rule {
        Rule {
            fault,
            matches: Box::new(matches),
            times: usize::MAX,
        }
    }
}

struct State {
    upstream: SocketAddr,
    rules: Mutex<Vec<Rule>>,
    injected: AtomicUsize,
    seen: Mutex<Vec<String>>,
    stopped: AtomicBool,
}

/// The proxy; it stops serving (and releases stalled connections) when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`, to give the SDK as its endpoint.
    pub endpoint: String,
    /// `127.0.0.1:PORT`, as error messages print it.
    pub addr: String,
    state: Arc<State>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl FaultProxy {
    /// A proxy in front of `upstream` (`http://host:port`), injecting nothing yet.
    pub fn start(upstream: &str) -> FaultProxy {
        let up = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .replace("localhost", "127.0.0.1");
        let upstream: SocketAddr = up.parse().expect("upstream host:port");
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let state = Arc::new(State {
            upstream,
            rules: Mutex::new(Vec::new()),
            injected: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                if st.stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = s else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve(st, s));
            }
        });
        FaultProxy {
            endpoint: format!("http://{addr}"),
            addr,
            state,
        }
    }

    pub fn add(&self, rule: Rule) -> &Self {
        self.state.rules.lock().unwrap().push(rule);
        self
    }

    pub fn clear(&self) {
        self.state.rules.lock().unwrap().clear();
    }

    /// Faults injected so far.
    pub fn injected(&self) -> usize {
        self.state.injected.load(Ordering::SeqCst)
    }

    /// `METHOD target` of every request received, in order.
    pub fn seen(&self) -> Vec<String> {
        self.state.seen.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees `stopped`.
        let _ = TcpStream::connect(&self.addr);
    }
}

/// The fault for `req`, if a rule with uses left matches (and uses one).
fn pick(st: &State, req: &Request) -> Option<Fault> {
    let mut rules = st.rules.lock().unwrap();
    let r = rules.iter_mut().find(|r| r.times > 0 && (r.matches)(req))?;
    if r.times != usize::MAX {
        r.times -= 1;
    }
    st.injected.fetch_add(1, Ordering::SeqCst);
    Some(r.fault)
}

/// Read one request head; `None` at a clean end of the connection.
fn read_head(r: &mut BufReader<TcpStream>) -> Option<(Vec<u8>, Request)> {
    let mut raw = Vec::new();
    let mut first = String::new();
    if r.read_line(&mut first).ok()? == 0 {
        return None;
    }
    raw.extend_from_slice(first.as_bytes());
    let mut parts = first.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        raw.extend_from_slice(line.as_bytes());
        let t = line.trim_end();
        if t.is_empty() {
            break;
        }
        if let Some((k, v)) = t.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let body_len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    Some((
        raw,
        Request {
            method,
            target,
            headers,
            body_len,
        },
    ))
}

fn reset(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
    let _ = s.shutdown(Shutdown::Read);
}

fn stall(st: &State) {
    for _ in 0..600 {
        if st.stopped.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn error_response(status: &str, code: &str, message: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One client connection: requests one after the other (keep-alive).
fn serve(st: Arc<State>, client: TcpStream) {
    let _ = client.set_nodelay(true);
    let Ok(read_half) = client.try_clone() else {
        return;
    };
    let mut r = BufReader::new(read_half);
    let mut w = client;
    while let Some((head, req)) = read_head(&mut r) {
        st.seen
            .lock()
            .unwrap()
            .push(format!("{} {}", req.method, req.target));
        let fault = pick(&st, &req);
        if req
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            let _ = w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        // The request body; a data-side fault on a request with a body cuts it half-way.
        let data_on_request = req.body_len > 0;
        let half = req.body_len / 2;
        match fault {
            Some(Fault::ResetMidBody | Fault::StallMidBody | Fault::TruncatedBody)
                if data_on_request =>
            {
                let mut buf = vec![0u8; half];
                let _ = r.read_exact(&mut buf);
                match fault {
                    Some(Fault::ResetMidBody) => reset(&w),
                    Some(Fault::StallMidBody) => stall(&st),
                    _ => {
                        let _ = w.shutdown(Shutdown::Both);
                    }
                }
                return;
            }
            _ => {}
        }
        let mut body = vec![0u8; req.body_len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        match fault {
            Some(f @ (Fault::Status500 | Fault::SlowDown503)) => {
                let resp = if f == Fault::Status500 {
                    error_response(
                        "500 Internal Server Error",
                        "InternalError",
                        "We encountered an internal error. Please try again. (injected)",
                    )
                } else {
                    error_response(
                        "503 Slow Down",
                        "SlowDown",
                        "Please reduce your request rate. (injected)",
                    )
                };
                if w.write_all(&resp).is_err() {
                    return;
                }
                continue;
            }
            Some(Fault::Answer(xml)) => {
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{xml}",
                    xml.len()
                );
                if w.write_all(resp.as_bytes()).is_err() {
                    return;
                }
                continue;
            }
            Some(Fault::CorruptBody) if !body.is_empty() => {
                let i = body.len() / 2;
                body[i] ^= 0x01;
            }
            Some(Fault::Delay(d)) => std::thread::sleep(d),
            _ => {}
        }
        let Some((resp_head, mut resp_body)) = forward(&st, &head, &body, &req.method) else {
            reset(&w);
            return;
        };
        if fault == Some(Fault::CorruptBody) && !data_on_request && !resp_body.is_empty() {
            let i = resp_body.len() / 2;
            resp_body[i] ^= 0x01;
        }
        match fault {
            Some(f @ (Fault::ResetMidBody | Fault::StallMidBody | Fault::TruncatedBody)) => {
                let _ = w.write_all(&resp_head);
                let _ = w.write_all(&resp_body[..resp_body.len() / 2]);
                let _ = w.flush();
                match f {
                    Fault::ResetMidBody => reset(&w),
                    Fault::StallMidBody => stall(&st),
                    _ => {
                        let _ = w.shutdown(Shutdown::Both);
                    }
                }
                return;
            }
            _ => {
                if w.write_all(&resp_head).is_err() || w.write_all(&resp_body).is_err() {
                    return;
                }
            }
        }
    }
}

/// Send one request upstream on a fresh connection; the response head and body.
fn forward(st: &State, head: &[u8], body: &[u8], method: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut up = TcpStream::connect(st.upstream).ok()?;
    up.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    up.write_all(head).ok()?;
    up.write_all(body).ok()?;
    let mut r = BufReader::new(up);
    loop {
        let mut raw = Vec::new();
        let mut status = 0u16;
        let mut len: Option<usize> = None;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).ok()? == 0 {
                return None;
            }
            raw.extend_from_slice(line.as_bytes());
            let t = line.trim_end();
            if status == 0 {
                status = t.split_whitespace().nth(1)?.parse().ok()?;
                continue;
            }
            if t.is_empty() {
                break;
            }
            if let Some((k, v)) = t.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().ok();
                }
                if k.trim().eq_ignore_ascii_case("transfer-encoding")
                    && v.to_ascii_lowercase().contains("chunked")
                {
                    chunked = true;
                }
            }
        }
        if (100..200).contains(&status) {
            continue; // 100 Continue from the server: the client already had ours
        }
        let mut resp_body = Vec::new();
        if method == "HEAD" || status == 204 || status == 304 {
        } else if chunked {
            // Keep the chunked framing as it is; read through the last chunk and trailers.
            loop {
                let mut size_line = String::new();
                if r.read_line(&mut size_line).ok()? == 0 {
                    return None;
                }
                resp_body.extend_from_slice(size_line.as_bytes());
                let size = usize::from_str_radix(size_line.trim().split(';').next()?, 16).ok()?;
                if size == 0 {
                    loop {
                        let mut t = String::new();
                        if r.read_line(&mut t).ok()? == 0 {
                            break;
                        }
                        resp_body.extend_from_slice(t.as_bytes());
                        if t.trim_end().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let mut chunk = vec![0u8; size + 2];
                r.read_exact(&mut chunk).ok()?;
                resp_body.extend_from_slice(&chunk);
            }
        } else if let Some(n) = len {
            resp_body = vec![0u8; n];
            r.read_exact(&mut resp_body).ok()?;
        } else {
            r.read_to_end(&mut resp_body).ok()?;
        }
        return Some((raw, resp_body));
    }
}
