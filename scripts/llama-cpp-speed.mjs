// llama.cpp speed through node-llama-cpp (installed by scripts/llama-cpp-check.sh into ~/.cache/powerinfer/node-llama-cpp):
// node llama-cpp-speed.mjs MODEL P N REPS prints prefill (P random tokens, one batch) and greedy decode (N tokens)
// tok/s, medians of REPS after a warm-up, 2 threads.
import {getLlama} from "node-llama-cpp";
const [path, P, N, R] = process.argv.slice(2).map((v, i) => i ? Number(v) : v);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath: path});
const vocab = model.tokens.size ?? 32000;
const med = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
const pp = [], tg = [];
for (let r = 0; r < R + 1; r++) {
  const ctx = await model.createContext({contextSize: 512, threads: {ideal: 2, min: 2}, batchSize: 512, sequences: 1});
  const seq = ctx.getSequence();
  let x = 12345 + r;
  const prompt = Array.from({length: P}, () => { x = (x * 1103515245 + 12345) % 2147483648; return 100 + x % (Math.min(vocab, 30000) - 100); });
  let t0 = performance.now();
  const p = prompt.map((t, i) => i == P - 1 ? [t, {generateNext: {token: true}}] : t);
  let res = await seq.controlledEvaluate(p);
  let tok = res[P - 1].next.token;
  const tp = performance.now() - t0;
  t0 = performance.now();
  for (let i = 0; i < N; i++) {
    res = await seq.controlledEvaluate([[tok, {generateNext: {token: true}}]]);
    tok = res[0].next.token;
  }
  const td = performance.now() - t0;
  if (r > 0) { pp.push(P / tp * 1000); tg.push(N / td * 1000); }
  await ctx.dispose();
}
console.log(JSON.stringify({model: path, pp: med(pp), tg: med(tg), pp_all: pp, tg_all: tg}));
