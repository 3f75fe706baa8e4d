#!/usr/bin/env python3
"""Check with gguf-py that the Q4_K/Q6_K files `powerinfer quantize` writes are read as we read
them, and keep a few rows as test fixtures in tests/data/kquant/ (run once, committed).

Usage: make_kquant_fixtures.py INPUT.gguf OUT_Q4_K.gguf OUT_Q6_K.gguf
where the outputs are `powerinfer quantize INPUT OUT --type q4_k` / `--type q6_k`.

For each output the file must open in gguf-py with general.file_type set and every 2-D weight
matrix of the asked type or its fallback. Fixture cases, listed in manifest.txt as
`<case> <type> <n_elements>`: <case>.in.f32 (the input rows, dequantised by gguf-py: what our
quantiser was given), <case>.q (the bytes we wrote) and <case>.f32 (gguf-py's dequantisation of
those bytes).
"""
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T, GGUFReader
from gguf.quants import dequantize

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "kquant")
FILE_TYPE = {T.Q4_K: 14, T.Q6_K: 18}
FALLBACK = {T.Q4_K: T.Q5_0, T.Q6_K: T.Q8_0}
NROWS = 2


def field(r, key):
    f = r.fields[key]
    return f.parts[f.data[0]][0]


def main(inp, outs):
    os.makedirs(OUT, exist_ok=True)
    src = GGUFReader(inp)
    src_tensors = {t.name: t for t in src.tensors}
    manifest = []
    for ty, path in zip([T.Q4_K, T.Q6_K], outs):
        r = GGUFReader(path)
        assert field(r, "general.file_type") == FILE_TYPE[ty], path
        assert len(r.tensors) == len(src.tensors)
        for t in r.tensors:
            s = src_tensors[t.name]
            if len(t.shape) == 2 and t.shape[1] > 1:
                want = ty if t.shape[0] % 256 == 0 else FALLBACK[ty]
                assert t.tensor_type == want, (t.name, t.tensor_type, want)
                # Every matrix decodes to finite values close to the input's.
                a = dequantize(np.asarray(s.data), s.tensor_type).reshape(-1)
                b = dequantize(np.asarray(t.data), t.tensor_type).reshape(-1)
                assert np.all(np.isfinite(b)), t.name
                rel = np.sqrt(np.mean((a - b) ** 2) / np.mean(a ** 2))
                assert rel < 0.15, (t.name, rel)
            else:
                assert t.tensor_type == s.tensor_type, t.name
        t = next(t for t in r.tensors if t.tensor_type == ty)
        s = src_tensors[t.name]
        rows = np.asarray(t.data)[:NROWS]
        inp_rows = dequantize(np.asarray(s.data)[:NROWS], s.tensor_type)
        case = f"{ty.name}_{t.name.replace('.', '_')}"
        rows.tofile(os.path.join(OUT, case + ".q"))
        np.ascontiguousarray(dequantize(rows, ty), dtype="<f4").tofile(os.path.join(OUT, case + ".f32"))
        np.ascontiguousarray(inp_rows, dtype="<f4").tofile(os.path.join(OUT, case + ".in.f32"))
        manifest.append(f"{case} {ty.name} {inp_rows.size}")
        print(path, "ok;", case, rows.shape)
    with open(os.path.join(OUT, "manifest.txt"), "w") as fh:
        fh.write("\n".join(manifest) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
