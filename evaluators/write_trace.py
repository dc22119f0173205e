#!/usr/bin/env python3
"""Write a sparsetune attention trace (docs/trace-format.md) from your own pipeline.

Usage as a library, from the code that runs your model:

    from write_trace import TraceWriter
    writer = TraceWriter("out/trace", model={
        "name": "my-model/480p", "layers": 30, "heads": 12, "head_dim": 128,
        "grid": [21, 30, 52], "text_tokens": 0, "text_position": "none", "steps": 50})
    # inside the attention of layer `layer` at sampler step `step`, with q/k/v after RoPE,
    # laid out [batch, heads, tokens, head_dim] in the joint-sequence order:
    writer.add(step, layer, q, k, v)          # numpy arrays or torch tensors
    writer.close()                            # writes trace.json next to the .safetensors files

Run as a script, it writes a small random example:

    python3 evaluators/write_trace.py OUT_DIR

Needs only numpy (torch tensors are converted with .float().cpu().numpy()).
"""
import json
import os
import struct
import sys

import numpy as np


def _as_numpy(x):
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().float().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def save_safetensors(path, tensors):
    """Minimal safetensors writer: 8-byte little-endian header length, JSON header, data."""
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        data = _as_numpy(array).tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


class TraceWriter:
    """Collects attention calls and writes one .safetensors file per step plus the manifest."""

    def __init__(self, out_dir, model, sample=0):
        self.out_dir = out_dir
        self.model = model
        self.sample = sample
        self.calls = []
        self.pending = {}  # step -> {tensor name: array}
        os.makedirs(out_dir, exist_ok=True)

    def add(self, step, layer, q, k, v, sample=None):
        sample = self.sample if sample is None else sample
        m = self.model
        tokens = m["grid"][0] * m["grid"][1] * m["grid"][2] + m["text_tokens"]
        expected = (m["heads"], tokens, m["head_dim"])
        file = "sample%d_step%03d.safetensors" % (sample, step)
        names = {}
        for part, x in (("q", q), ("k", k), ("v", v)):
            x = _as_numpy(x)
            if x.ndim != 4 or tuple(x.shape[1:]) != expected:
                raise ValueError("%s of step %d layer %d has shape %s; expected [B, %d, %d, %d]"
                                 % (part, step, layer, x.shape, *expected))
            name = "layer%02d.%s" % (layer, part)
            self.pending.setdefault(file, {})[name] = x
            names[part] = name
        self.calls.append({"sample": sample, "step": step, "layer": layer, "file": file, **names})

    def close(self):
        for file, tensors in self.pending.items():
            save_safetensors(os.path.join(self.out_dir, file), tensors)
        manifest = {"format": "sparsetune.trace", "version": 1, "model": self.model,
                    "calls": self.calls}
        with open(os.path.join(self.out_dir, "trace.json"), "w") as f:
            json.dump(manifest, f, indent=1)
        return os.path.join(self.out_dir, "trace.json")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: write_trace.py OUT_DIR")
    model = {"name": "example-trace", "layers": 2, "heads": 2, "head_dim": 16,
             "grid": [4, 4, 4], "text_tokens": 4, "text_position": "front", "steps": 4}
    rng = np.random.default_rng(0)
    tokens = 4 * 4 * 4 + 4
    writer = TraceWriter(sys.argv[1], model)
    for step in (1, 2, 3):
        for layer in range(model["layers"]):
            q, k, v = (rng.standard_normal((1, 2, tokens, 16)) for _ in range(3))
            writer.add(step, layer, q, k, v)
    print(writer.close())


if __name__ == "__main__":
    main()
