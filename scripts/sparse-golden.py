#!/usr/bin/env python3
"""Greedy answers to the golden questions, dense against predicted-sparse, and how many of
the sparse answer's token ids agree with the dense one's.

Usage: scripts/sparse-golden.py SIDECAR [--model M] [--golden tests/data/smollm2_greedy.json]
       [--threads 2]

For each golden case it runs `powerinfer run --temp 0` on the case's prompt twice (dense,
then `--sparse --sidecar SIDECAR`), tokenizes both answers, and prints the common prefix of
the id lists and the share of positions where they agree (over the dense answer's length).
Uses target/release/powerinfer (`cargo build --release` first).
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "powerinfer")
DEFAULT_MODEL = os.path.join(
    os.environ.get("POWERINFER_MODELS", os.path.expanduser("~/.cache/powerinfer/models")),
    "SmolLM2-135M-Instruct.Q4_1.gguf",
)


def run(args):
    out = subprocess.run([BIN] + args, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"powerinfer {' '.join(args[:1])} failed: {out.stderr.strip()}")
    return out.stdout


def answer(model, prompt, n, threads, sparse):
    args = ["run", "-m", model, "-p", prompt, "-n", str(n), "--temp", "0", "-t", str(threads)]
    out = run(args + sparse)
    # `run` ends the completion with one newline of its own.
    return out[:-1] if out.endswith("\n") else out


def ids(model, text):
    return json.loads(run(["tokenize", "-m", model, "--ids", "--no-bos", text]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sidecar")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--golden", default=os.path.join(ROOT, "tests", "data", "smollm2_greedy.json"))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} not found: run `cargo build --release` first")
    cases = json.load(open(a.golden))["cases"]
    agree_all = total = 0
    for c in cases:
        n = c["n_predict"]
        dense = answer(a.model, c["prompt"], n, a.threads, [])
        sparse = answer(a.model, c["prompt"], n, a.threads, ["--sparse", "--sidecar", a.sidecar])
        d, s = ids(a.model, dense), ids(a.model, sparse)
        prefix = next((i for i, (x, y) in enumerate(zip(d, s)) if x != y), min(len(d), len(s)))
        agree = sum(x == y for x, y in zip(d, s))
        agree_all += agree
        total += len(d)
        question = c["prompt"].split("\n")[1].replace("<|im_end|>", "")
        print(f"{question}\n  dense:  {dense.strip()!r}\n  sparse: {sparse.strip()!r}")
        print(f"  ids: common prefix {prefix} of {len(d)}, equal at {agree} of {len(d)} positions")
    print(f"all cases: {agree_all} of {total} dense ids matched by position ({agree_all / max(total, 1):.1%})")


if __name__ == "__main__":
    main()
