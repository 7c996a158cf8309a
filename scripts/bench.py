#!/usr/bin/env python3
"""Side-by-side forward-pass benchmark: kubestyle (burn) against PyTorch and onnxruntime.

Not a test: it prints a table. Every implementation runs in its own process (so peak RSS is
its own), with the same thread count, and the rounds are interleaved (A B C A B C ...) so that
load on the machine hits all of them alike. Medians over rounds x reps.

  * TransformerNet (same weights: the .pth fixture and its kubestyle package):
    PyTorch eager vs kubestyle's fused CPU kernels (stylize's default on the CPU), burn-flex's
    tensor ops (--kernels burn), and burn-tch when a tch build is given.
  * MultiStyle26 (the trained ONNX network): onnxruntime vs the same three.

Usage: scripts/bench.py [--sizes 512 1024] [--rounds 3] [--reps 3] [--threads 2]
Needs: the venv of scripts/test.sh, the fixtures, and
       cargo build --release -p stylize --example bench_forward [--features tch]
"""

import argparse
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
    x = pattern(np, size)
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
    else:
        raise SystemExit(f"unknown worker {kind}")
    run()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1000.0)
    print(json.dumps({"impl": kind, "size": size, "times_ms": times, "peak_rss_mb": round(peak_rss_mb())}))


def run_json(cmd, env):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker")
    ap.add_argument("--size", type=int)
    a = ap.parse_args()
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
        tn_pkg, ms_pkg = os.path.join(vol, "models/tn_zip"), os.path.join(vol, "models/multistyle26")
        groups = {
            "TransformerNet": [("pytorch", [sys.executable, __file__, "--worker", "pytorch"])],
            "MultiStyle26": [("onnxruntime", [sys.executable, __file__, "--worker", "onnxruntime"])],
        }
        for name, pkg in (("TransformerNet", tn_pkg), ("MultiStyle26", ms_pkg)):
            groups[name].append(("kubestyle-fused", [flex_bin, pkg, "{size}", "{reps}", "fused"]))
            if not os.environ.get("KUBESTYLE_BENCH_SKIP_BURN_FLEX"):
                groups[name].append(("burn-flex", [flex_bin, pkg, "{size}", "{reps}", "flex"]))
            if tch_bin:
                groups[name].append(("burn-tch", [tch_bin, pkg, "{size}", "{reps}", "tch"]))
        results = {}
        for size in a.sizes:
            for rnd in range(a.rounds):
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
    print(f"\n{a.threads} threads, {a.rounds} rounds x {a.reps} reps, medians; ratio = time / reference\n")
    print("| network | size | implementation | median ms | ratio | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for net, impls in groups.items():
        ref = impls[0][0]
        for size in a.sizes:
            base = statistics.median(results[(net, size, ref)]["times"])
            for impl, _ in impls:
                r = results[(net, size, impl)]
                m = statistics.median(r["times"])
                print(f"| {net} | {size}² | {impl} | {m:.0f} | {m / base:.2f}x | {r['rss']:.0f} |")


if __name__ == "__main__":
    main()
