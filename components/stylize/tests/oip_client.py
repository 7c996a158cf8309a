#!/usr/bin/env python3
"""Triton's HTTP client (tritonclient 2.73, the reference client of the Open Inference Protocol's
binary-data extension) against `stylize serve`: one image as a BYTES input, sent as binary data or
as JSON, the output asked for as binary data or JSON. Writes the returned image to OUT.

usage: oip_client.py URL MODEL STYLE IMAGE OUT --input binary|json --output binary|json
"""
import argparse
import base64
import sys

import numpy as np
import tritonclient.http as httpclient


def main():
    ap = argparse.ArgumentParser()
    for a in ("url", "model", "style", "image", "out"):
        ap.add_argument(a)
    ap.add_argument("--input", choices=["binary", "json"], required=True)
    ap.add_argument("--output", choices=["binary", "json"], required=True)
    a = ap.parse_args()
    client = httpclient.InferenceServerClient(url=a.url.removeprefix("http://"))
    image = open(a.image, "rb").read()
    # In JSON a BYTES element is text: the image goes base64 (as KServe's V2 examples send it).
    data = np.array([image if a.input == "binary" else base64.b64encode(image)], dtype=np.object_)
    inp = httpclient.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(data, binary_data=a.input == "binary")
    out = httpclient.InferRequestedOutput("image", binary_data=a.output == "binary")
    r = client.infer(a.model, [inp], outputs=[out], parameters={"style": a.style})
    meta = r.get_output("image")
    binary = "binary_data_size" in (meta.get("parameters") or {})
    if binary != (a.output == "binary"):
        print(f"asked for {a.output} output, got binary={binary}: {meta}", file=sys.stderr)
        return 1
    value = r.as_numpy("image").reshape(-1)[0]
    value = value if isinstance(value, bytes) else value.encode()
    if a.output == "json":
        value = base64.b64decode(value)
    with open(a.out, "wb") as f:
        f.write(value)
    print(f"ok: {a.input} in, {a.output} out, {meta['parameters']['content_type']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
