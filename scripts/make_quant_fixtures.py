#!/usr/bin/env python3
"""Make reference fixtures for the quant tests with gguf-py (run once; tests do not need Python).

For each format, writes into tests/data/quant/:
  <name>.q    raw block bytes
  <name>.deq  gguf-py dequantisation of those bytes (little-endian f32)
  <name>.src  (only where gguf-py can quantise) the f32 input that was quantised into <name>.q
Formats gguf-py cannot quantise (k-quants) get random block bytes with sane f16 scales.
Rows of real model tensors are written as model_<type>.{q,deq}.
"""
import os
import sys
import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
import gguf.quants as Q

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "quant")
MODELS = os.path.expanduser("~/.cache/powerinfer/models")
rng = np.random.default_rng(1234)


def write(name, q, deq, src=None):
    np.asarray(q, dtype=np.uint8).tofile(os.path.join(OUT, name + ".q"))
    np.asarray(deq, dtype="<f4").tofile(os.path.join(OUT, name + ".deq"))
    if src is not None:
        np.asarray(src, dtype="<f4").tofile(os.path.join(OUT, name + ".src"))


def random_rows(rows, cols):
    # varied scales per row and a few outliers, all non-zero
    scales = np.array([0.01, 0.5, 3.0, 100.0])[np.arange(rows) % 4]
    x = rng.standard_normal((rows, cols)).astype(np.float32) * scales[:, None].astype(np.float32)
    x[:, 7] *= 6
    return x.astype(np.float32)


for name, ty in [("F16", T.F16), ("BF16", T.BF16), ("Q4_0", T.Q4_0), ("Q4_1", T.Q4_1),
                 ("Q5_0", T.Q5_0), ("Q5_1", T.Q5_1), ("Q8_0", T.Q8_0)]:
    src = random_rows(4, 256)
    q = Q.quantize(src, ty)
    deq = Q.dequantize(q, ty)
    write(name, q.view(np.uint8), deq, src)

# k-quants: random blocks with the f16 super-block scales set to plausible values.
KQ = {  # name: (type, block bytes, offsets of f16 scale fields)
    "Q2_K": (T.Q2_K, 84, [80, 82]),
    "Q3_K": (T.Q3_K, 110, [108]),
    "Q4_K": (T.Q4_K, 144, [0, 2]),
    "Q5_K": (T.Q5_K, 176, [0, 2]),
    "Q6_K": (T.Q6_K, 210, [208]),
}
for name, (ty, bb, offs) in KQ.items():
    nblk = 6
    blocks = rng.integers(0, 256, size=(nblk, bb), dtype=np.uint8)
    for b in range(nblk):
        for o in offs:
            v = np.float16(rng.uniform(0.001, 0.2) * (1 if rng.random() < 0.8 else -1))
            blocks[b, o:o + 2] = np.frombuffer(v.tobytes(), dtype=np.uint8)
    deq = Q.dequantize(blocks.reshape(-1), ty)
    write(name, blocks.reshape(-1), deq)

# Rows of real model tensors, two per (model, type).
wanted = [("SmolLM2-135M-Instruct.Q4_1.gguf", [T.Q4_1, T.Q8_0]),
          ("qwen2.5-coder-0.5b.Q4_K_M.gguf", [T.Q4_K, T.Q5_0, T.Q6_K, T.Q8_0])]
for fname, types in wanted:
    path = os.path.join(MODELS, fname)
    if not os.path.exists(path):
        print("missing", path, file=sys.stderr)
        continue
    r = gguf.GGUFReader(path)
    for ty in types:
        t = next(t for t in r.tensors if t.tensor_type == ty and len(t.shape) == 2)
        cols = int(t.shape[0])
        bs, bb = gguf.GGML_QUANT_SIZES[ty]
        rb = cols // bs * bb
        raw = np.asarray(t.data).view(np.uint8).reshape(-1)[: 2 * rb]
        deq = Q.dequantize(raw, ty)
        tag = fname.split("-")[0].split(".")[0].lower()
        write(f"model_{tag}_{ty.name}", raw, deq)
        with open(os.path.join(OUT, f"model_{tag}_{ty.name}.txt"), "w") as f:
            f.write(f"{t.name} cols={cols} rows=2\n")
print("ok")
