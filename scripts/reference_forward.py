#!/usr/bin/env python3
"""Independent numpy reference forward pass for llama / qwen2 / gemma3 GGUF models.

Plain and slow on purpose: every tensor is dequantised to float32 with
gguf.quants.dequantize, the whole prompt is run through causal attention at
once (no KV cache), f32 throughout. It mirrors what llama.cpp computes
(src/models/{llama,qwen2,gemma3}.cpp), not HF transformers where they differ.

Usage:
  # next-token logits / greedy continuation from token ids
  python3 scripts/reference_forward.py MODEL.gguf --ids 818,5279,529 [--bos] [--greedy 16]
  # greedy continuation of a text prompt (tiny built-in tokenizer, see tokenize())
  python3 scripts/reference_forward.py MODEL.gguf --text "The capital of France is" --greedy 16
  # regenerate the committed fixtures in tests/data/reference/
  python3 scripts/reference_forward.py --fixtures
  # check greedy continuations against /work/shared/golden/*.json
  python3 scripts/reference_forward.py --validate [--n 16] [--only smollm2,qwen05,gemma3]
  # teacher-forced: argmax vs golden token at every completion position, with margins
  python3 scripts/reference_forward.py --teacher [--only smollm2]

GGUF layout reminder: a tensor with GGUF dims [ne0, ne1] is a numpy array of
shape (ne1, ne0); for a weight matrix ne0 = in_features, ne1 = out_features,
so y = x @ W.T.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

MODELS_DIR = os.path.expanduser("~/.cache/powerinfer/models")
GOLDEN_DIR = "/work/shared/golden"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODEL_FILES = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "qwen05": "qwen2.5-coder-0.5b.Q4_K_M.gguf",
    "gemma3": "gemma-3-270m.Q4_K_M.gguf",
}


# ----------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------

def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    v = f.contents()
    return v


class Model:
    def __init__(self, path):
        r = GGUFReader(path)
        self.reader = r
        arch = _field(r, "general.architecture")
        self.arch = arch
        g = lambda k, d=None: _field(r, f"{arch}.{k}", d)
        self.n_layer = int(g("block_count"))
        self.d = int(g("embedding_length"))
        self.n_ff = int(g("feed_forward_length"))
        self.n_head = int(g("attention.head_count"))
        self.n_head_kv = int(g("attention.head_count_kv", self.n_head))
        self.head_dim = int(g("attention.key_length", self.d // self.n_head))
        self.n_rot = int(g("rope.dimension_count", self.head_dim))
        self.eps = float(g("attention.layer_norm_rms_epsilon"))
        self.rope_base = float(g("rope.freq_base", 10000.0))
        self.n_swa = int(g("attention.sliding_window", 0))
        self.add_bos = bool(_field(r, "tokenizer.ggml.add_bos_token", False))
        self.bos_id = int(_field(r, "tokenizer.ggml.bos_token_id", -1))
        self.eos_id = int(_field(r, "tokenizer.ggml.eos_token_id", -1))

        self.t = {}
        for t in r.tensors:
            self.t[t.name] = self._deq(t)
        if "output.weight" not in self.t:  # tied head
            self.t["output.weight"] = self.t["token_embd.weight"]
        self.vocab = self.t["token_embd.weight"].shape[0]

        # per-arch constants (llama.cpp)
        if arch == "llama":
            self.rope_neox = False
        elif arch in ("qwen2", "gemma3"):
            self.rope_neox = True
        else:
            raise SystemExit(f"unsupported arch {arch}")
        # attention scale: 1/sqrt(head_dim) for all three (gemma3: query_pre_attn_scalar
        # = head_dim = 256 for every size except 27B, llama.cpp uses 1/sqrt(n_embd_head_k))
        self.attn_scale = 1.0 / math.sqrt(self.head_dim)

    @staticmethod
    def _deq(t):
        ne = [int(x) for x in t.shape]  # GGUF order: ne0 first
        shape = tuple(reversed(ne))
        a = dequantize(np.asarray(t.data), t.tensor_type)
        return np.ascontiguousarray(a.reshape(shape), dtype=np.float32)

    def is_swa(self, il):
        # gemma3: llama.cpp hparams.set_swa_pattern(6): layer il is sliding-window
        # iff il % 6 < 5, i.e. layers 5, 11, 17, ... are global.
        if self.arch != "gemma3":
            return False
        return il % 6 < 5

    def layer_rope_base(self, il):
        if self.arch == "gemma3" and self.is_swa(il):
            return 10000.0  # rope_freq_base_train_swa
        return self.rope_base


# ----------------------------------------------------------------------------
# ops
# ----------------------------------------------------------------------------

def rms_norm(x, w, eps):
    # ggml_rms_norm then multiply by the weight (gemma3 weights already include +1)
    ms = np.mean(x * x, axis=-1, keepdims=True, dtype=np.float32)
    return (x / np.sqrt(ms + np.float32(eps))).astype(np.float32) * w


def rope(x, pos, n_rot, base, neox):
    """x: (T, H, hd). theta_i = pos * base^(-2i/n_rot), i in [0, n_rot/2)."""
    half = n_rot // 2
    inv = base ** (-np.arange(half, dtype=np.float64) * 2.0 / n_rot)
    ang = pos[:, None].astype(np.float64) * inv[None, :]  # (T, half)
    cos = np.cos(ang).astype(np.float32)[:, None, :]
    sin = np.sin(ang).astype(np.float32)[:, None, :]
    out = x.copy()
    if neox:  # pairs (i, i + n_rot/2)
        a = x[..., :half]
        b = x[..., half:n_rot]
        out[..., :half] = a * cos - b * sin
        out[..., half:n_rot] = a * sin + b * cos
    else:  # "normal": adjacent pairs (2i, 2i+1)
        a = x[..., 0:n_rot:2]
        b = x[..., 1:n_rot:2]
        out[..., 0:n_rot:2] = a * cos - b * sin
        out[..., 1:n_rot:2] = a * sin + b * cos
    return out


def silu(x):
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x):
    c = np.float32(math.sqrt(2.0 / math.pi))
    return 0.5 * x * (1.0 + np.tanh(c * (x + np.float32(0.044715) * x * x * x)))


def softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


# ----------------------------------------------------------------------------
# forward
# ----------------------------------------------------------------------------

def forward(m, ids, last_only=False):
    """Return logits (T, vocab) (or (1, vocab) if last_only) for token ids at positions 0..T-1."""
    ids = np.asarray(ids, dtype=np.int64)
    T = len(ids)
    pos = np.arange(T)
    t = m.t
    x = t["token_embd.weight"][ids].astype(np.float32)
    if m.arch == "gemma3":
        x = x * np.float32(math.sqrt(m.d))

    H, KV, hd = m.n_head, m.n_head_kv, m.head_dim
    grp = H // KV
    causal = pos[None, :] <= pos[:, None]  # [query, key]

    for il in range(m.n_layer):
        p = f"blk.{il}."
        h = rms_norm(x, t[p + "attn_norm.weight"], m.eps)
        q = h @ t[p + "attn_q.weight"].T
        k = h @ t[p + "attn_k.weight"].T
        v = h @ t[p + "attn_v.weight"].T
        if p + "attn_q.bias" in t:  # qwen2
            q = q + t[p + "attn_q.bias"]
            k = k + t[p + "attn_k.bias"]
            v = v + t[p + "attn_v.bias"]
        q = q.reshape(T, H, hd)
        k = k.reshape(T, KV, hd)
        v = v.reshape(T, KV, hd)
        if m.arch == "gemma3":  # per-head RMS norm over head_dim, before rope
            q = rms_norm(q, t[p + "attn_q_norm.weight"], m.eps)
            k = rms_norm(k, t[p + "attn_k_norm.weight"], m.eps)
        base = m.layer_rope_base(il)
        q = rope(q, pos, m.n_rot, base, m.rope_neox)
        k = rope(k, pos, m.n_rot, base, m.rope_neox)

        mask = causal
        if m.is_swa(il) and m.n_swa > 0:
            # llama.cpp LLAMA_SWA_TYPE_STANDARD: key p0 masked for query p1 iff p1 - p0 >= n_swa
            mask = causal & ((pos[:, None] - pos[None, :]) < m.n_swa)

        out = np.empty((T, H, hd), dtype=np.float32)
        for hh in range(H):
            kh = hh // grp  # GQA: query head hh uses kv head hh // (H/KV)
            s = (q[:, hh, :] @ k[:, kh, :].T) * np.float32(m.attn_scale)  # (T, T)
            s = np.where(mask, s, -np.inf)
            out[:, hh, :] = softmax(s) @ v[:, kh, :]
        a = out.reshape(T, H * hd) @ t[p + "attn_output.weight"].T

        if m.arch == "gemma3":
            a = rms_norm(a, t[p + "post_attention_norm.weight"], m.eps)
        x = x + a

        h = rms_norm(x, t[p + "ffn_norm.weight"], m.eps)
        gate = h @ t[p + "ffn_gate.weight"].T
        up = h @ t[p + "ffn_up.weight"].T
        act = gelu_tanh(gate) if m.arch == "gemma3" else silu(gate)
        f = (act * up).astype(np.float32) @ t[p + "ffn_down.weight"].T
        if m.arch == "gemma3":
            f = rms_norm(f, t[p + "post_ffw_norm.weight"], m.eps)
        x = x + f

    if last_only:
        x = x[-1:]
    x = rms_norm(x, t["output_norm.weight"], m.eps)
    return (x @ t["output.weight"].T).astype(np.float32)


def greedy(m, ids, n):
    ids = list(ids)
    out = []
    for _ in range(n):
        logits = forward(m, ids, last_only=True)[0]
        nxt = int(np.argmax(logits))
        out.append(nxt)
        ids.append(nxt)
        if nxt == m.eos_id:
            break
    return out


# ----------------------------------------------------------------------------
# tiny tokenizers (only good enough for the golden prompts; checked against
# tokenizer_ids.json by --validate)
# ----------------------------------------------------------------------------

def _bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class Tokenizer:
    def __init__(self, m):
        r = m.reader
        self.kind = _field(r, "tokenizer.ggml.model")
        self.tokens = list(_field(r, "tokenizer.ggml.tokens"))
        self.types = list(_field(r, "tokenizer.ggml.token_type"))
        self.tok2id = {s: i for i, s in enumerate(self.tokens)}
        # control / user-defined tokens are matched verbatim before BPE
        self.special = sorted([s for s, ty in zip(self.tokens, self.types) if ty in (3, 4) and len(s) > 1],
                              key=len, reverse=True)
        if self.kind == "gpt2":
            merges = list(_field(r, "tokenizer.ggml.merges"))
            self.ranks = {tuple(mg.split(" ", 1)): i for i, mg in enumerate(merges)}
            self.b2u = _bytes_to_unicode()
        else:
            self.scores = list(_field(r, "tokenizer.ggml.scores"))

    def _split_special(self, text):
        parts = []
        i = 0
        buf = ""
        while i < len(text):
            for s in self.special:
                if text.startswith(s, i):
                    if buf:
                        parts.append((False, buf))
                        buf = ""
                    parts.append((True, s))
                    i += len(s)
                    break
            else:
                buf += text[i]
                i += 1
        if buf:
            parts.append((False, buf))
        return parts

    def _bpe(self, word):
        parts = list(word)
        while len(parts) > 1:
            best = None
            for j in range(len(parts) - 1):
                rk = self.ranks.get((parts[j], parts[j + 1]))
                if rk is not None and (best is None or rk < best[0]):
                    best = (rk, j)
            if best is None:
                break
            j = best[1]
            parts[j:j + 2] = [parts[j] + parts[j + 1]]
        return [self.tok2id[p] for p in parts]

    def _spm(self, text):
        # llama.cpp SPM: spaces -> U+2581, then repeatedly merge the adjacent pair whose
        # concatenation is a vocab token with the highest score (leftmost on ties); byte fallback.
        text = text.replace(" ", "\u2581")
        parts = list(text)
        while True:
            best = None
            for j in range(len(parts) - 1):
                cat = parts[j] + parts[j + 1]
                i = self.tok2id.get(cat)
                if i is not None and (best is None or self.scores[i] > best[0]):
                    best = (self.scores[i], j)
            if best is None:
                break
            j = best[1]
            parts[j:j + 2] = [parts[j] + parts[j + 1]]
        ids = []
        for p in parts:
            if p in self.tok2id:
                ids.append(self.tok2id[p])
            else:
                for b in p.encode("utf-8"):
                    ids.append(self.tok2id[f"<0x{b:02X}>"])
        return ids

    def encode(self, text):
        import regex
        ids = []
        for is_special, s in self._split_special(text):
            if is_special:
                ids.append(self.tok2id[s])
            elif self.kind == "gpt2":
                pat = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                       r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
                for w in regex.findall(pat, s):
                    ids += self._bpe("".join(self.b2u[b] for b in w.encode("utf-8")))
            else:
                ids += self._spm(s)
        return ids

    def decode(self, ids):
        if self.kind == "gpt2":
            u2b = {v: k for k, v in self.b2u.items()}
            bs = bytearray()
            for i in ids:
                s = self.tokens[i]
                if self.types[i] in (3, 4):
                    bs += s.encode()
                else:
                    bs += bytes(u2b[c] for c in s)
            return bs.decode("utf-8", errors="replace")
        out = bytearray()
        for i in ids:
            s = self.tokens[i]
            if s.startswith("<0x") and s.endswith(">") and len(s) == 6:
                out.append(int(s[3:5], 16))
            else:
                out += s.replace("\u2581", " ").encode()
        return out.decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------
# fixtures / validation
# ----------------------------------------------------------------------------

FIXTURE_PROMPT = "The capital of France is"
SUBSET_STEP = 61  # last-position logits for ids 0, 61, 122, ... < vocab
TOPK = 16


def prompt_ids(m, tok, text):
    ids = tok.encode(text)
    if m.add_bos:
        ids = [m.bos_id] + ids
    return ids


def logsumexp(x):
    mx = np.max(x, axis=-1, keepdims=True).astype(np.float64)
    return (mx[..., 0] + np.log(np.sum(np.exp(x.astype(np.float64) - mx), axis=-1)))


def make_fixture(name):
    path = os.path.join(MODELS_DIR, MODEL_FILES[name])
    m = Model(path)
    tok = Tokenizer(m)
    # "The capital of France is" plus a second clause so the prompt is ~10 tokens
    text = "The capital of France is Paris. The capital of Germany is"
    ids = prompt_ids(m, tok, text)
    logits = forward(m, ids)
    lse = logsumexp(logits)
    positions = []
    for p in range(len(ids)):
        row = logits[p]
        top = np.argsort(-row, kind="stable")[:TOPK]
        positions.append({
            "pos": p,
            "top": [[int(i), round(float(row[i]), 5)] for i in top],
            "logsumexp": round(float(lse[p]), 5),
        })
    subset_ids = list(range(0, m.vocab, SUBSET_STEP))
    last = logits[-1]
    fx = {
        "model_file": MODEL_FILES[name],
        "arch": m.arch,
        "generator": "scripts/reference_forward.py (numpy, f32 math on gguf.quants.dequantize'd weights)",
        "prompt_text": text,
        "prompt_ids": [int(i) for i in ids],
        "bos_added": bool(m.add_bos),
        "vocab": m.vocab,
        "top_k": TOPK,
        "positions": positions,
        "last_subset": {
            "ids": f"range(0, {m.vocab}, {SUBSET_STEP})",
            "step": SUBSET_STEP,
            "logits": [round(float(last[i]), 5) for i in subset_ids],
        },
        "greedy_next_id": int(np.argmax(last)),
        "greedy_next_text": tok.decode([int(np.argmax(last))]),
    }
    outdir = os.path.join(REPO, "tests", "data", "reference")
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, f"{name}_logits.json"), "w") as f:
        json.dump(fx, f, separators=(",", ":"))
        f.write("\n")
    print(name, "prompt", ids, "->", fx["greedy_next_id"], repr(fx["greedy_next_text"]))


def validate(names, n):
    tid = json.load(open(os.path.join(GOLDEN_DIR, "tokenizer_ids.json")))["models"]
    ok_all = True
    for name in names:
        m = Model(os.path.join(MODELS_DIR, MODEL_FILES[name]))
        tok = Tokenizer(m)
        # 1. tokenizer sanity against llama-tokenize --no-bos
        bad = [c["text"] for c in tid[name] if tok.encode(c["text"]) != c["ids"]]
        print(f"[{name}] tokenizer: {len(tid[name]) - len(bad)}/{len(tid[name])} strings match llama-tokenize", 
              ("mismatch: " + repr(bad)) if bad else "")
        # 2. next token after "The capital of France is" (ids from tokenizer_ids.json)
        paris = [c for c in tid[name] if c["text"] == "The capital of France is Paris."][0]["ids"]
        ids = ([m.bos_id] if m.add_bos else []) + paris[:-2]
        lg = forward(m, ids, last_only=True)[0]
        top = int(np.argmax(lg))
        print(f"[{name}] next after 'The capital of France is' {ids}: {top} {tok.decode([top])!r}"
              f" (' Paris' id {paris[-2]} logit {lg[paris[-2]]:.3f}, top logit {lg[top]:.3f})")
        # 3. greedy continuation of each golden prompt
        gold = json.load(open(os.path.join(GOLDEN_DIR, {"smollm2": "smollm2_greedy.json", "qwen05": "qwen05_greedy.json",
                                                          "gemma3": "gemma3_greedy.json"}[name])))
        for case in gold["cases"][:2]:
            ids = prompt_ids(m, tok, case["prompt"])
            gen = greedy(m, ids, n)
            text = tok.decode([i for i in gen if i != m.eos_id])
            exp = case["completion"]
            ok = exp.startswith(text) if not (gen and gen[-1] == m.eos_id) else exp == text
            ok_all &= ok
            print(f"[{name}] {'OK  ' if ok else 'FAIL'} prompt {len(ids)} toks -> {gen}\n      ours: {text!r}\n      gold: {exp[:len(text) + 20]!r}")
            sys.stdout.flush()
    return ok_all


def teacher_forced(names):
    """Feed each golden prompt + golden completion (+EOS if it ended) and report where our
    argmax disagrees with the golden next token, with the logit margin (near-ties are expected:
    llama.cpp quantises activations to Q8 inside its quantised matmuls)."""
    for name in names:
        m = Model(os.path.join(MODELS_DIR, MODEL_FILES[name]))
        tok = Tokenizer(m)
        gold = json.load(open(os.path.join(GOLDEN_DIR, f"{name}_greedy.json")))
        for c in gold["cases"]:
            p = prompt_ids(m, tok, c["prompt"])
            g = tok.encode(c["completion"]) + ([m.eos_id] if c.get("ended_with_eos") else [])
            L = forward(m, p + g)[len(p) - 1:len(p) - 1 + len(g)]
            miss = [(j, tok.decode([t]), tok.decode([int(np.argmax(L[j]))]),
                     round(float(L[j].max() - L[j][t]), 3)) for j, t in enumerate(g) if int(np.argmax(L[j])) != t]
            print(f"[{name}] {len(g) - len(miss)}/{len(g)} argmax agree; misses (pos, gold, ours, margin): {miss}")
            sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?")
    ap.add_argument("--ids")
    ap.add_argument("--text")
    ap.add_argument("--bos", action="store_true")
    ap.add_argument("--greedy", type=int, default=0)
    ap.add_argument("--fixtures", action="store_true")
    ap.add_argument("--validate", action="store_true")
    ap.add_argument("--teacher", action="store_true", help="teacher-forced agreement with the golden completions")
    ap.add_argument("--only", default="smollm2,qwen05,gemma3")
    ap.add_argument("--n", type=int, default=16)
    a = ap.parse_args()
    names = a.only.split(",")
    if a.fixtures:
        for nm in names:
            make_fixture(nm)
        return
    if a.teacher:
        teacher_forced(names)
        return
    if a.validate:
        sys.exit(0 if validate(names, a.n) else 1)
    m = Model(a.model)
    tok = Tokenizer(m)
    if a.ids:
        ids = [int(x) for x in a.ids.split(",")]
        if a.bos:
            ids = [m.bos_id] + ids
    else:
        ids = prompt_ids(m, tok, a.text)
    print("prompt ids:", ids)
    if a.greedy:
        gen = greedy(m, ids, a.greedy)
        print("greedy:", gen, repr(tok.decode(gen)))
    else:
        lg = forward(m, ids, last_only=True)[0]
        top = np.argsort(-lg)[:10]
        for i in top:
            print(int(i), f"{lg[i]:.4f}", repr(tok.decode([int(i)])))


if __name__ == "__main__":
    main()
