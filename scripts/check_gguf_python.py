#!/usr/bin/env python3
"""Check that GGUF files written by our writer are read correctly by gguf-py (llama.cpp's own
Python implementation), independently of our reader.

Runs the ignored `dump_for_python` test of tests/gguf_roundtrip.rs, which writes synthetic
files of every metadata value type (including empty and nested arrays) next to a JSON
description, then compares what gguf.GGUFReader sees with the description: every key, type and
value, every tensor's name, shape, type, offset and data bytes, and the alignment.

Extra GGUF paths given on the command line are opened with GGUFReader as a readability check.

Usage: python3 scripts/check_gguf_python.py [extra.gguf ...]
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from gguf import GGUFReader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Our ValueType names -> GGUF type ids (the file format's numbering).
TYPE_IDS = {n: i for i, n in enumerate(
    ["U8", "I8", "U16", "I16", "U32", "I32", "F32", "Bool", "String", "Array", "U64", "I64",
     "F64"])}


def leaves(v):
    """Flatten a described value into its scalar leaves, as gguf-py flattens nested arrays."""
    if v["type"] == "Array":
        return [x for item in v["items"] for x in leaves(item)]
    return [(v["type"], v["value"])]


def field_leaves(field):
    """The scalar leaves gguf-py decoded for a field, in order."""
    out = []
    for idx in field.data:
        part = field.parts[idx]
        out.append(part)
    return out


def same_scalar(ty, want, part):
    if ty == "String":
        return bytes(part.tobytes()).decode("utf-8") == want
    got = part.tolist()[0]
    if ty == "F32":
        return np.float32(got) == np.float32(want)
    if ty == "Bool":
        return bool(got) == want
    return got == want


def check_file(path, desc):
    r = GGUFReader(path)
    fields = {k: f for k, f in r.fields.items() if not k.startswith("GGUF.")}
    want_meta = desc["metadata"]
    assert list(fields) == [k for k, _ in want_meta], (list(fields), want_meta)
    for key, want in want_meta:
        f = fields[key]
        assert int(f.types[0]) == TYPE_IDS[want["type"]], (key, f.types, want["type"])
        if want["type"] == "Array":
            assert int(f.parts[3][0]) == TYPE_IDS[want["elem"]], key
            assert int(f.parts[4][0]) == len(want["items"]), key
        w_leaves = leaves(want)
        g_leaves = field_leaves(f)
        assert len(w_leaves) == len(g_leaves), (key, len(w_leaves), len(g_leaves))
        for (ty, wv), part in zip(w_leaves, g_leaves):
            assert same_scalar(ty, wv, part), (key, ty, wv, part)
    assert r.alignment == desc["alignment"], (r.alignment, desc["alignment"])
    assert os.path.getsize(path) == desc["file_len"]
    assert len(r.tensors) == len(desc["tensors"])
    for t, w in zip(r.tensors, desc["tensors"]):
        assert t.name == w["name"], (t.name, w["name"])
        assert [int(d) for d in t.shape] == w["dims"], (t.name, t.shape, w["dims"])
        assert int(t.tensor_type) == w["type"], (t.name, t.tensor_type)
        assert t.data_offset == r.data_offset + w["offset"], t.name
        assert t.n_bytes == w["n_bytes"], (t.name, t.n_bytes, w["n_bytes"])
        j = np.arange(w["n_bytes"], dtype=np.uint64)
        expect = ((j * 31 + w["seed"] * 7 + 3) % 256).astype(np.uint8)
        got = np.frombuffer(t.data.tobytes(), dtype=np.uint8)
        assert np.array_equal(got, expect), t.name
    return len(fields), len(r.tensors)


def main():
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, GGUF_DUMP_DIR=d)
        subprocess.run(
            ["cargo", "test", "-q", "--test", "gguf_roundtrip", "dump_for_python", "--",
             "--ignored"],
            cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        names = sorted(n[:-5] for n in os.listdir(d) if n.endswith(".gguf"))
        assert names, "the dump test wrote nothing"
        for n in names:
            with open(os.path.join(d, n + ".json")) as fh:
                desc = json.load(fh)
            kv, nt = check_file(os.path.join(d, n + ".gguf"), desc)
            print(f"ok  {n}.gguf: {kv} keys, {nt} tensors match gguf-py's GGUFReader")
    for p in sys.argv[1:]:
        r = GGUFReader(p)
        print(f"ok  {p}: readable, {len(r.fields)} fields, {len(r.tensors)} tensors")


if __name__ == "__main__":
    main()
