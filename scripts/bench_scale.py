#!/usr/bin/env python3
"""Throughput at scale: `pipeline run` over thousands of small images and hundreds of photos.

Two sets, each × 2 styles of MultiStyle26 (fused CPU kernels), each on local storage and against a
moto S3 server on 127.0.0.1, each on a fresh volume:

  small:  --small images of 96×96 (default 10,000: 20,000 outputs in one directory)
  mid:    --mid images of 512×512 (default 100: 200 outputs)
  photos: --photos images of 2048×1536 (default 200: 400 outputs)

For every run it reports the wall time of `pipeline run`, Σ forward (each output's forward pass
as stylize measured it, from the stylize manifest, divided by `forward_lanes` — small images run
side by side, one per core, so each pass's time is one core's, and the machine makes
`forward_lanes` outputs in that time), the overhead (wall − Σ forward) in % and per output in ms,
the peak RSS of every stage process (from `/usr/bin/time`), and the wall time of a second,
fully cached `pipeline run` of the same spec. Goals (issue #14): overhead ≤ 10% at 512² and
above, ≤ 2 ms per output beyond the forward pass at 96², a cached rerun of 10,000 outputs ≤ 3 s,
memory flat in the number of inputs (compare `--small 1000` with `--small 10000`).

Run with the test venv's python (it has Pillow, moto and boto3), on a quiet machine:
    ~/.cache/kubestyle/venv/bin/python scripts/bench_scale.py [--small 10000] [--mid 100] [--photos 200]
        [--sets small,photos] [--storage local,moto] [--lanes N]
Needs the workspace built (`cargo build --workspace`; the debug profile optimises the kernels)
and the assets (scripts/fetch_assets.py).
"""

import argparse
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("download", "package-model", "stylize", "upload")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_images(dest, n, w, h):
    """`n` distinct JPEGs of w×h: crops of the four sample photos at varying scales."""
    from PIL import Image

    assets = os.path.join(ROOT, ".cache", "assets")
    srcs = [Image.open(os.path.join(assets, f)).convert("RGB")
            for f in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")]
    os.makedirs(dest, exist_ok=True)
    for i in range(n):
        im = srcs[i % len(srcs)]
        sw, sh = im.size
        k = 0.5 + 0.5 * ((i * 7919) % 1000) / 1000.0
        cw, ch = max(8, int(sw * k)), max(8, int(sh * k))
        x0 = (sw - cw) * ((i * 31) % 17) // 16
        y0 = (sh - ch) * ((i * 17) % 13) // 12
        crop = im.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BILINEAR)
        crop.save(os.path.join(dest, f"img{i:05d}.jpg"), quality=90)


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


def wrapper_dir(tmp, bin_dir, rss_dir):
    """Stage binaries wrapped in /usr/bin/time, each appending its peak RSS (KiB) to a file."""
    d = os.path.join(tmp, "bin")
    os.makedirs(d, exist_ok=True)
    for s in STAGES:
        p = os.path.join(d, s)
        with open(p, "w") as f:
            f.write(f'#!/bin/sh\nexec /usr/bin/time -a -o "{rss_dir}/{s}" -f %M '
                    f'"{os.path.join(bin_dir, s)}" "$@"\n')
        os.chmod(p, 0o755)
    return d


def run(pipeline, spec, env):
    t0 = time.perf_counter()
    p = subprocess.run([pipeline, "run", spec], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"pipeline failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    return wall, p.stdout


def forward_seconds(volume):
    """Σ forward_ms / forward_lanes over the stylize manifest(s), and the output count."""
    total, n = 0.0, 0
    for path in glob.glob(os.path.join(volume, "runs", "bench", "stylize*.manifest.json")):
        with open(path) as f:
            for a in json.load(f)["outputs"]:
                at = a.get("attributes", {})
                total += at["forward_ms"] / max(1, at.get("forward_lanes", 1))
                n += 1
    return total / 1000.0, n


def peak_rss(rss_dir):
    out = {}
    for s in STAGES:
        try:
            with open(os.path.join(rss_dir, s)) as f:
                kib = [int(l) for l in f.read().split() if l.isdigit()]
            out[s] = max(kib) / 1024.0 if kib else None
        except FileNotFoundError:
            out[s] = None
    return out


def stage_seconds(stdout):
    return {l.split()[0]: float(l.split()[2]) for l in stdout.splitlines()
            if l.split()[:1] and l.split()[0] in STAGES and len(l.split()) > 2
            and l.split()[2].replace(".", "", 1).isdigit()}


def bench(name, tmp, pipeline, bin_dir, spec_text, env, volume):
    rss_dir = os.path.join(tmp, f"rss-{name}")
    os.makedirs(rss_dir)
    env = dict(env, KUBESTYLE_BIN_DIR=wrapper_dir(tmp, bin_dir, rss_dir))
    spec = os.path.join(tmp, f"{name}.yaml")
    with open(spec, "w") as f:
        f.write(spec_text)
    wall, out = run(pipeline, spec, env)
    fwd, n = forward_seconds(volume)
    rss = peak_rss(rss_dir)
    stages = stage_seconds(out)
    cached, _ = run(pipeline, spec, env)
    over = wall - fwd
    print(f"| {name} | {n} | {wall:.1f} s | {fwd:.1f} s | {over:.1f} s | "
          f"{100 * over / wall:.1f}% | {1000 * over / max(1, n):.2f} ms | "
          + " / ".join(f"{rss[s]:.0f}" if rss[s] else "-" for s in STAGES) + " | "
          + ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
          + f" | {cached:.2f} s |", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=10000, help="images of 96x96")
    ap.add_argument("--small-size", type=int, default=96)
    ap.add_argument("--mid", type=int, default=100, help="images of 512x512")
    ap.add_argument("--photos", type=int, default=200, help="images of 2048x1536")
    ap.add_argument("--sets", default="small,mid,photos")
    ap.add_argument("--storage", default="local,moto")
    ap.add_argument("--lanes", type=int, default=None, help="stylize --lanes (default: cores)")
    a = ap.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    bin_dir = os.path.join(target, "debug")
    pipeline = os.path.join(bin_dir, "pipeline")
    model = os.path.join(ROOT, ".cache", "assets", "multistyle26.onnx")
    for f in (pipeline, model, "/usr/bin/time"):
        if not os.path.exists(f):
            sys.exit(f"missing {f}: build the workspace and fetch the assets first")
    env = dict(os.environ)
    if a.lanes:
        env["KUBESTYLE_LANES"] = str(a.lanes)
    sets = {"small": (a.small, a.small_size, a.small_size), "mid": (a.mid, 512, 512),
            "photos": (a.photos, 2048, 1536)}
    storages = a.storage.split(",")
    print(f"MultiStyle26 × 2 styles, fused kernels, {os.cpu_count()} cores; "
          f"peak RSS in MiB (download / package-model / stylize / upload)\n")
    print("| run | outputs | wall | Σ forward | overhead | overhead % | overhead per output "
          "| peak RSS MiB | stage seconds | cached rerun |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    moto = None
    with tempfile.TemporaryDirectory(dir=os.environ.get("KUBESTYLE_BENCH_TMP")) as tmp:
        try:
            for set_name in a.sets.split(","):
                n, w, h = sets[set_name]
                if n <= 0:
                    continue
                images = os.path.join(tmp, set_name, "images")
                make_images(images, n, w, h)
                label = f"{n} × {w}×{h}"
                if "local" in storages:
                    vol = os.path.join(tmp, set_name, "vol-local")
                    bench(f"{set_name}-local", tmp, pipeline, bin_dir,
                          SPEC.format(volume=vol, images=images + "/", model=model,
                                      output=os.path.join(tmp, set_name, "out")),
                          env, vol)
                    shutil.rmtree(vol)
                    shutil.rmtree(os.path.join(tmp, set_name, "out"))
                if "moto" in storages:
                    if moto is None:
                        moto, c, s3env = start_moto(env)
                    bucket_in, bucket_out = f"{set_name}-in", f"{set_name}-out"
                    for b in (bucket_in, bucket_out):
                        c.create_bucket(Bucket=b)
                    for paths, to in (([images], f"s3://{bucket_in}/"),
                                      ([model], f"s3://{bucket_in}/models/")):
                        subprocess.run([os.path.join(bin_dir, "upload"), "push", *paths,
                                        "--to", to], env=s3env, check=True,
                                       capture_output=True)
                    vol = os.path.join(tmp, set_name, "vol-s3")
                    bench(f"{set_name}-moto", tmp, pipeline, bin_dir,
                          SPEC.format(volume=vol, images=f"s3://{bucket_in}/images/",
                                      model=f"s3://{bucket_in}/models/multistyle26.onnx",
                                      output=f"s3://{bucket_out}/runs/"),
                          s3env, vol)
                    shutil.rmtree(vol)
                shutil.rmtree(images)
                print(f"<!-- {set_name}: {label} -->", flush=True)
        finally:
            if moto is not None:
                moto.terminate()
                moto.wait()


def start_moto(env):
    port = free_port()
    moto = subprocess.Popen([shutil.which("moto_server") or
                             os.path.join(os.path.dirname(sys.executable), "moto_server"),
                             "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    s3env = dict(env, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
                 AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                 AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                 AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    import boto3
    c = boto3.client("s3", endpoint_url=s3env["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                     aws_secret_access_key="testing", region_name="us-east-1")
    for _ in range(100):
        try:
            c.list_buckets()
            break
        except Exception:
            time.sleep(0.1)
    return moto, c, s3env


if __name__ == "__main__":
    main()
