"""The real `openai` Python client against a running `powerinfer serve`.

Run by tests/serve/main.rs with POWERINFER_URL (http://host:port) and POWERINFER_KEY set.
Exits non-zero on the first failed check.
"""

import os

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["POWERINFER_URL"] + "/v1",
                api_key=os.environ["POWERINFER_KEY"], max_retries=0)

ids = [m.id for m in client.models.list().data]
assert ids == ["SmolLM2-135M-Instruct.Q4_1"], ids
model = ids[0]
# llama.cpp answers this with "The capital of France is Paris." by clear margins; the bare
# question, under SmolLM2's default system prompt, starts with a near-tie.
question = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]

# Non-streamed, greedy.
r = client.chat.completions.create(model=model, messages=question, temperature=0, max_tokens=32)
answer = r.choices[0].message.content
assert r.object == "chat.completion"
assert r.choices[0].message.role == "assistant"
assert "Paris" in answer, answer
assert r.choices[0].finish_reason == "stop", r.choices[0].finish_reason
assert 0 < r.usage.completion_tokens <= 32
assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

# The same request streamed: the pieces add up to the same answer.
stream = client.chat.completions.create(model=model, messages=question, temperature=0,
                                        max_tokens=32, stream=True,
                                        stream_options={"include_usage": True})
pieces, finish, usage = [], None, None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            pieces.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
assert "".join(pieces) == answer, (pieces, answer)
assert len(pieces) > 1, pieces
assert finish == "stop"
assert usage is not None and usage.completion_tokens == r.usage.completion_tokens

# Roles: a system message and an earlier turn change the prompt.
convo = [{"role": "system", "content": "You answer in one word."},
         {"role": "user", "content": "Name a color."},
         {"role": "assistant", "content": "Blue."},
         {"role": "user", "content": "What is the capital of France?"}]
r2 = client.chat.completions.create(model=model, messages=convo, temperature=0, max_tokens=16)
assert r2.usage.prompt_tokens > r.usage.prompt_tokens

# Limits: max_tokens ends with "length", a stop string cuts the text before it.
r = client.chat.completions.create(model=model, messages=question, temperature=0, max_tokens=3)
assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
r = client.chat.completions.create(model=model, messages=question, temperature=0, max_tokens=32,
                                   stop=["Paris"])
assert r.choices[0].finish_reason == "stop"
assert r.choices[0].message.content == answer[:answer.index("Paris")], r.choices[0].message.content

# Sampling with a seed is reproducible.
kw = dict(model=model, messages=[{"role": "user", "content": "Tell me a story."}],
          temperature=1.0, top_p=0.9, max_tokens=24)
a = client.chat.completions.create(seed=7, **kw).choices[0].message.content
b = client.chat.completions.create(seed=7, **kw).choices[0].message.content
assert a == b, (a, b)

# Text completions.
c = client.completions.create(model=model, prompt="The capital of France is", temperature=0,
                              max_tokens=4)
assert c.choices[0].text.startswith(" Paris"), c.choices[0].text
assert c.choices[0].finish_reason == "length"

# Errors reach the client as its exception types.
try:
    client.chat.completions.create(model="no-such-model", messages=question)
    raise AssertionError("unknown model accepted")
except openai.NotFoundError:
    pass
try:
    OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0).models.list()
    raise AssertionError("wrong key accepted")
except openai.AuthenticationError:
    pass

print("openai client: all checks passed")
