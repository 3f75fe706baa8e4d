#!/usr/bin/env python3
"""Write reference fixtures for the quant tests into tests/data/quant/ (run once, committed).

Two kinds of case, listed in manifest.txt as `<case> <type> <n_elements> <has_input>`:
  * random_<TYPE>: random non-zero f32 data quantised by gguf.quants (types it can quantise)
    or random valid block bytes (k-quants, which gguf-py cannot quantise), with the
    dequantisation by gguf.quants. Files: <case>.q (block bytes), <case>.f32 (expected values),
    and for quantised data <case>.in.f32 (the input that was quantised).
  * <model>_<TYPE>: the first rows of a real model tensor of that type and their
    dequantisation by gguf.quants.
"""
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T, GGUFReader
from gguf.quants import dequantize, quantize

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "quant")
MODELS = os.environ.get("POWERINFER_MODELS", os.path.expanduser("~/.cache/powerinfer/models"))
rng = np.random.default_rng(20261123)
manifest = []


def write(case, ty, q, f, inp=None):
    q = np.ascontiguousarray(q)
    q = q.view(np.uint8) if q.dtype != np.uint8 else q
    f = np.ascontiguousarray(f, dtype="<f4").reshape(-1)
    q.tofile(os.path.join(OUT, case + ".q"))
    f.tofile(os.path.join(OUT, case + ".f32"))
    if inp is not None:
        np.ascontiguousarray(inp, dtype="<f4").tofile(os.path.join(OUT, case + ".in.f32"))
    manifest.append(f"{case} {ty.name} {f.size} {int(inp is not None)}")


def random_values(n):
    # Mixed scales per 32-block, plus a few outliers, so blocks differ in range and sign.
    x = rng.standard_normal(n).astype(np.float32)
    x *= np.repeat(rng.uniform(0.01, 3.0, n // 32), 32).astype(np.float32)
    x[rng.integers(0, n, n // 50)] *= 8
    x[x == 0] = 0.5
    return x


N = 1024
for ty in [T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]:
    x = random_values(N)
    q = quantize(x.reshape(1, N), ty)
    write(f"random_{ty.name}", ty, q, dequantize(q, ty), x)

# k-quants: random bytes with sane f16 scales (gguf-py has no k-quant quantiser).
KQ = {T.Q2_K: (84, [80, 82]), T.Q3_K: (110, [108]), T.Q4_K: (144, [0, 2]),
      T.Q5_K: (176, [0, 2]), T.Q6_K: (210, [208])}
for ty, (bb, f16_offs) in KQ.items():
    nb = N // 256
    q = rng.integers(0, 256, (nb, bb), dtype=np.uint8)
    for off in f16_offs:
        d = rng.uniform(0.001, 0.05, nb).astype(np.float16)
        q[:, off:off + 2] = d.view(np.uint8).reshape(nb, 2)
    write(f"random_{ty.name}", ty, q.reshape(-1), dequantize(q.reshape(1, -1), ty))


def model_rows(short, fname, types, nrows=2):
    path = os.path.join(MODELS, fname)
    if not os.path.exists(path):
        sys.exit(f"missing model {path}")
    r = GGUFReader(path)
    for ty in types:
        t = next(t for t in r.tensors if t.tensor_type == ty and len(t.shape) == 2)
        rows = np.asarray(t.data)[:nrows]  # (nrows, row_bytes) for quantised types
        write(f"{short}_{ty.name}", ty, rows.reshape(-1), dequantize(rows, ty))
        print(short, ty.name, t.name, rows.shape)


model_rows("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", [T.Q4_1, T.Q8_0])
model_rows("qwen05", "qwen2.5-coder-0.5b.Q4_K_M.gguf", [T.Q4_K, T.Q5_0, T.Q6_K], nrows=1)

with open(os.path.join(OUT, "manifest.txt"), "w") as fh:
    fh.write("\n".join(manifest) + "\n")
