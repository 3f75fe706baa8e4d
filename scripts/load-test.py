#!/usr/bin/env python3
"""Load figures of a running `powerinfer serve`: requests/s, generated tokens/s summed over
all streams, and time to first token (p50/p99), at several numbers of parallel streams.

Each stream is a client thread that sends streamed chat requests one after another (greedy,
a different prompt each time) until it has sent --requests. Standard library only.

    powerinfer serve -m MODEL --parallel 8 --port 8080 &
    scripts/load-test.py --url http://127.0.0.1:8080 --streams 1 4 8 --runs 3
"""

import argparse
import http.client
import json
import statistics
import threading
import time
import urllib.parse

TOPICS = ["the sea", "a cat", "winter", "bread", "a robot", "the moon", "trains", "music",
          "a garden", "chess", "rain", "a library", "rivers", "a violin", "deserts", "coffee"]


def one_request(url, prompt, max_tokens):
    """Send one streamed chat request; returns (time to first token, generated tokens)."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = json.dumps({"messages": [{"role": "user", "content": prompt}], "temperature": 0,
                       "max_tokens": max_tokens, "stream": True,
                       "stream_options": {"include_usage": True}})
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
    ttft, tokens = None, 0
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        for c in chunk["choices"]:
            if c["delta"].get("content") and ttft is None:
                ttft = time.perf_counter() - t0
    conn.close()
    return ttft if ttft is not None else time.perf_counter() - t0, tokens


def run(url, streams, requests, max_tokens):
    ttfts, tokens, lock = [], [0], threading.Lock()

    def client(c):
        for k in range(requests):
            i = c * requests + k
            prompt = f"Write a short paragraph about {TOPICS[i % len(TOPICS)]} (#{i})."
            t, n = one_request(url, prompt, max_tokens)
            with lock:
                ttfts.append(t)
                tokens[0] += n

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    q = statistics.quantiles(ttfts, n=100, method="inclusive")
    return {"req_s": len(ttfts) / wall, "tok_s": tokens[0] / wall, "ttft_p50": q[49],
            "ttft_p99": q[98]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--requests", type=int, default=4, help="requests per stream")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3, help="runs per setting; the median is shown")
    args = ap.parse_args()
    one_request(args.url, "Hello", 4)  # warm-up: page in the weights
    print("| streams | requests/s | tokens/s | TTFT p50 (s) | TTFT p99 (s) |")
    print("|---:|---:|---:|---:|---:|")
    for s in args.streams:
        runs = [run(args.url, s, args.requests, args.max_tokens) for _ in range(args.runs)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"| {s} | {med['req_s']:.2f} | {med['tok_s']:.1f} | {med['ttft_p50']:.3f} "
              f"| {med['ttft_p99']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
