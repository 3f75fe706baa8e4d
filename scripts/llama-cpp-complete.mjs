// Greedy completion of a prompt by llama.cpp (node-llama-cpp's prebuilt CPU build) for each model:
// node complete.mjs PROMPT N MODEL... prints one JSON line per model. Used by llama-cpp-check.sh.
import {getLlama, LlamaCompletion} from "node-llama-cpp";
const [prompt, n, ...models] = process.argv.slice(2);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
for (const path of models) {
  const model = await llama.loadModel({modelPath: path});
  const ctx = await model.createContext({contextSize: 256, threads: {ideal: 2, min: 1}});
  const c = new LlamaCompletion({contextSequence: ctx.getSequence()});
  const text = await c.generateCompletion(prompt, {maxTokens: Number(n), temperature: 0});
  console.log(JSON.stringify({model: path, text}));
  await ctx.dispose();
  await model.dispose();
}
