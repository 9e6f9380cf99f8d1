"""Sixteen clients stream at once (bounded: one request each, with a timeout). At temperature 0 every
output equals the same prompt's output run alone."""
import os
import threading

import openai

client = openai.OpenAI(base_url=os.environ["BASE_URL"], api_key="unused", timeout=300, max_retries=0)
model = os.environ["MODEL"]
CLIENTS = 16
PROMPTS = [f"Write one sentence about the number {i}." for i in range(CLIENTS)]


def ask(prompt, out, i):
    pieces = []
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=32, temperature=0, stream=True
    )
    for chunk in stream:
        for c in chunk.choices:
            if c.delta.content:
                pieces.append(c.delta.content)
    out[i] = "".join(pieces)


solo = [None] * CLIENTS
for i, p in enumerate(PROMPTS):
    ask(p, solo, i)

together = [None] * CLIENTS
threads = [threading.Thread(target=ask, args=(p, together, i)) for i, p in enumerate(PROMPTS)]
for t in threads:
    t.start()
for t in threads:
    t.join(timeout=600)
for i in range(CLIENTS):
    assert together[i] is not None, f"client {i} did not finish"
    assert together[i] == solo[i], f"client {i}: batched {together[i]!r} != solo {solo[i]!r}"
print("16 concurrent streams matched their solo runs")
