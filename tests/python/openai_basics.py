"""The openai SDK, pointed at model-runner by base_url alone: chat (plain and streamed), completions,
models, and an error case. Exits non-zero on the first broken expectation."""
import os
import sys

import openai

client = openai.OpenAI(base_url=os.environ["BASE_URL"], api_key=os.environ.get("API_KEY", "unused"))
model = os.environ["MODEL"]

models = client.models.list()
ids = [m.id for m in models.data]
assert model in ids, f"{model} not in {ids}"
assert client.models.retrieve(model).id == model

chat = client.chat.completions.create(
    model=model,
    messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is the capital of France?"}],
    max_tokens=24,
    temperature=0,
)
assert chat.object == "chat.completion"
choice = chat.choices[0]
assert choice.message.role == "assistant"
assert isinstance(choice.message.content, str) and choice.message.content.strip(), chat
assert choice.finish_reason in ("stop", "length"), choice.finish_reason
assert chat.usage.prompt_tokens > 5 and 0 < chat.usage.completion_tokens <= 24, chat.usage
assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens

limited = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Count from 1 to 100."}], max_tokens=5, temperature=0
)
assert limited.choices[0].finish_reason == "length" and limited.usage.completion_tokens == 5, limited

pieces = []
finish = None
usage = None
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    max_tokens=24,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    assert chunk.object == "chat.completion.chunk"
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            pieces.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
streamed = "".join(pieces)
assert finish in ("stop", "length"), finish
assert usage is not None and usage.completion_tokens > 0, usage
plain = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=24, temperature=0
)
assert streamed == plain.choices[0].message.content, (streamed, plain.choices[0].message.content)

with_logprobs = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Say hi"}], max_tokens=4, temperature=0, logprobs=True, top_logprobs=3
)
content = with_logprobs.choices[0].logprobs.content
assert len(content) == with_logprobs.usage.completion_tokens
assert all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in content), content

completion = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0)
assert completion.object == "text_completion"
assert completion.choices[0].text and completion.choices[0].finish_reason in ("stop", "length")
assert completion.usage.completion_tokens <= 8

two = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Name a color."}], max_tokens=6, n=2, temperature=1.0, seed=3
)
assert [c.index for c in two.choices] == [0, 1]

try:
    client.chat.completions.create(model="ai/no-such-model", messages=[{"role": "user", "content": "hi"}])
    sys.exit("an unknown model must fail")
except openai.NotFoundError as e:
    assert e.status_code == 404
    assert e.body["code"] == "model_not_found", e.body

try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], temperature=5)
    sys.exit("temperature 5 must fail")
except openai.BadRequestError as e:
    assert e.body["param"] == "temperature", e.body

print("openai SDK checks passed")
