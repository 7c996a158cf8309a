#!/usr/bin/env python3
"""Load benchmark of `stylize serve` against a reference server, in the same run.

Not a test: it prints a table. The reference is built the way the usual anchors are (IBM's
MAX-Fast-Neural-Style-Transfer): a small Flask server around PyTorch eager, here on the same
TransformerNet weights (the .pth fixture) that kubestyle serves from its package. Both take a
JPEG's bytes (`POST`) and answer the styled JPEG. For each size (512², 1024²) and number of
concurrent clients (1, 4, 16) on loopback, each client sends requests back to back (keep-alive)
for --seconds; reported: requests/s, p50 and p99 latency, errors, and the server's peak RSS
(VmHWM). The two servers are measured alternately, config by config, so that other load on the
machine hits both alike. Then an overload run (--overload clients, default 64) against
`stylize serve` alone: how many were answered 200 and 503 (none lost), how fast the 503s came,
and the peak RSS.

Usage: scripts/bench_serve.py [--sizes 512 1024] [--clients 1 4 16] [--seconds 20]
                              [--threads 2] [--overload 64]
Needs: the venv of scripts/test.sh plus Flask (`$venv/bin/pip install flask`), the fixtures,
       cargo build --release -p stylize -p package-model --bins --example bench_forward
       (KUBESTYLE_BENCH_PROFILE=debug to use
       the dev build, whose own hot loops and dependencies are optimised too)
"""

import argparse
import json
import http.client
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.environ.get("KUBESTYLE_ASSETS", os.path.join(ROOT, ".cache", "assets"))
TN_DIR = os.path.join(ROOT, "components/kubestyle-models/tests/fixtures/transformer_net")
TN_PTH = os.path.join(TN_DIR, "generated/tn_zip.pth")


def reference_server(port, threads):
    """The reference: Flask (threaded) + PyTorch eager, one forward pass per request."""
    import numpy as np
    import torch
    from flask import Flask, Response, request
    from PIL import Image

    sys.path.insert(0, TN_DIR)
    from gen import TransformerNet  # the reference definition beside the fixture

    torch.set_num_threads(threads)
    net = TransformerNet().eval()
    net.load_state_dict(torch.load(TN_PTH))
    app = Flask("reference")

    @app.get("/health")
    def health():
        return "ok"

    @app.post("/model/predict")
    def predict():
        img = Image.open(io.BytesIO(request.get_data())).convert("RGB")
        x = torch.from_numpy(np.asarray(img, dtype=np.float32).transpose(2, 0, 1).copy())[None]
        with torch.no_grad():
            y = net(x).clamp(0, 255)[0]
        out = Image.fromarray((y.numpy().transpose(1, 2, 0) + 0.5).astype(np.uint8))
        buf = io.BytesIO()
        out.save(buf, format="JPEG")
        return Response(buf.getvalue(), mimetype="image/jpeg")

    app.run(host="127.0.0.1", port=port, threaded=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_up(port, path, proc, what):
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} did not come up")


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def load(port, path, body, clients, seconds):
    """`clients` threads, each on its own keep-alive connection, back to back for `seconds`.
    Returns (latencies of 200s, latencies of 503s, other statuses/errors, wall seconds)."""
    ok, busy, other = [], [], []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers={"Content-Type": "image/jpeg"})
                r = conn.getresponse()
                r.read()
                status = r.status
            except (OSError, http.client.HTTPException) as e:
                status = type(e).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            dt = time.perf_counter() - t0
            with lock:
                (ok if status == 200 else busy if status == 503 else other).append(
                    dt if status in (200, 503) else status)
            if status == 503:
                time.sleep(0.05)

    t0 = time.monotonic()
    ts = [threading.Thread(target=client) for _ in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return ok, busy, other, time.monotonic() - t0


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))] * 1000.0


def photo(size):
    from PIL import Image
    img = Image.open(os.path.join(ASSETS, "chelsea.png")).convert("RGB").resize((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--overload", type=int, default=64)
    ap.add_argument("--reference-server", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.reference_server:
        return reference_server(a.reference_server, a.threads)

    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    profile = os.environ.get("KUBESTYLE_BENCH_PROFILE", "release")
    bins = os.path.join(target, profile)
    for b in ("stylize", "package-model", "examples/bench_forward"):
        if not os.path.exists(os.path.join(bins, b)):
            raise SystemExit(f"{bins}/{b} missing: cargo build --release -p stylize -p package-model "
                             "--bins --example bench_forward")
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads),
               RUST_LOG="warn")
    procs = []
    try:
        with tempfile.TemporaryDirectory() as vol:
            subprocess.run([os.path.join(bins, "package-model"), "--volume", vol, "--run-id", "bench",
                            TN_PTH], check=True, capture_output=True, env=env)
            # Where package-model put it, from its manifest through the contract crate (as
            # scripts/bench.py does: no copy of the volume's layout here).
            pkgs = subprocess.run([os.path.join(bins, "examples/bench_forward"), "--packages", vol, "bench"],
                                  check=True, capture_output=True, text=True, env=env)
            pkg = json.loads(pkgs.stdout.strip().splitlines()[-1])["transformer-net"]
            kport, rport = free_port(), free_port()
            ks = subprocess.Popen([os.path.join(bins, "stylize"), "serve", "--package", pkg,
                                   "--listen", f"127.0.0.1:{kport}", "--max-body-bytes", str(64 << 20)],
                                  env=env, stderr=subprocess.DEVNULL)
            procs.append(ks)
            rs = subprocess.Popen([sys.executable, __file__, "--reference-server", str(rport),
                                   "--threads", str(a.threads)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(rs)
            wait_up(kport, "/v2/health/ready", ks, "stylize serve")
            wait_up(rport, "/health", rs, "the reference server")
            servers = [("kubestyle", kport, "/stylize", ks), ("flask+pytorch", rport, "/model/predict", rs)]
            rows = []
            for size in a.sizes:
                body = photo(size)
                for name, port, path, p in servers:  # warm-up
                    load(port, path, body, 1, 0.1)
                for clients in a.clients:
                    for name, port, path, p in servers:
                        ok, busy, other, wall = load(port, path, body, clients, a.seconds)
                        rows.append((size, clients, name, len(ok) / wall, pct(ok, 50), pct(ok, 99),
                                     len(busy), len(other), peak_rss_mb(p.pid)))
                        print(f"  {size}² {clients} clients {name}: {len(ok) / wall:.2f} req/s, "
                              f"p50 {pct(ok, 50):.0f} ms, p99 {pct(ok, 99):.0f} ms", file=sys.stderr)
            size = a.sizes[0]
            ok, busy, other, wall = load(kport, "/stylize", photo(size), a.overload, a.seconds)
            over = (size, a.overload, len(ok), len(busy), len(other), pct(ok, 50), pct(ok, 99),
                    pct(busy, 50), pct(busy, 99), peak_rss_mb(ks.pid))
    finally:
        for p in procs:
            p.terminate()
            p.wait()
    print(f"\n{a.threads} threads per server, {a.seconds:.0f} s per configuration, loopback, "
          f"TransformerNet (the .pth fixture), JPEG in and out\n")
    print("| size | clients | server | req/s | p50 ms | p99 ms | 503 | errors | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]}² | {r[1]} | {r[2]} | {r[3]:.2f} | {r[4]:.0f} | {r[5]:.0f} | {r[6]} | "
              f"{r[7]} | {r[8]:.0f} |")
    print(f"\nOverload: {over[1]} clients at {over[0]}² against stylize serve (queue 32): "
          f"{over[2]} answered 200 (p50 {over[5]:.0f} ms, p99 {over[6]:.0f} ms), {over[3]} answered 503 "
          f"(p50 {over[7]:.1f} ms, p99 {over[8]:.1f} ms), {over[4]} lost or other; peak RSS "
          f"{over[9]:.0f} MB")
    # A run with failed requests is not a benchmark (and fails scripts/test.sh's smoke run).
    failed = [r for r in rows if r[7] or r[3] == 0] + ([over] if over[4] or not over[2] else [])
    if failed:
        raise SystemExit(f"requests failed or none answered: {failed}")


if __name__ == "__main__":
    main()
