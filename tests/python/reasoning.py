"""Reasoning output through the openai SDK against model-runner on the default model packaged with a
thinking template. MODEL has the deepseek-r1-distill template, whose generation prompt opens `<think>`,
so the model's whole short answer is reasoning; QWEN3_MODEL has qwen3's, whose `enable_thinking: false`
appends an empty think block to the prompt. Exits non-zero on the first broken expectation."""
import os

import openai

client = openai.OpenAI(base_url=os.environ["BASE_URL"], api_key="unused")
model = os.environ["MODEL"]
qwen3 = os.environ.get("QWEN3_MODEL", "ai/smollm2-qwen3:latest")
ask = [{"role": "user", "content": "What is the capital of France?"}]

# Non-streamed: the thinking in message.reasoning_content, none of it in the content.
r = client.chat.completions.create(model=model, messages=ask, temperature=0, max_tokens=16)
message = r.choices[0].message
reasoning = getattr(message, "reasoning_content", None)
assert reasoning, r
assert "<think>" not in reasoning and "</think>" not in reasoning, r
assert r.choices[0].finish_reason == "length", r
assert message.content == "", r

# Streamed: the same thinking, in delta.reasoning_content pieces; no content deltas carry it.
streamed, content, finish = "", "", None
for chunk in client.chat.completions.create(model=model, messages=ask, temperature=0, max_tokens=16, stream=True):
    if not chunk.choices:
        continue
    delta = chunk.choices[0].delta
    streamed += getattr(delta, "reasoning_content", None) or ""
    content += delta.content or ""
    finish = chunk.choices[0].finish_reason or finish
assert streamed == reasoning, (streamed, reasoning)
assert content == "", content
assert finish == "length", finish

# enable_thinking reaches the template: qwen3's prompt grows by its empty think block, through
# chat_template_kwargs and through reasoning_effort alike.
def prompt_tokens(**extra):
    r = client.chat.completions.create(model=qwen3, messages=ask, temperature=0, max_tokens=1, **extra)
    return r.usage.prompt_tokens

default = prompt_tokens()
off = prompt_tokens(extra_body={"chat_template_kwargs": {"enable_thinking": False}})
assert off > default, (off, default)
assert prompt_tokens(reasoning_effort="none") == off
assert prompt_tokens(reasoning_effort="high") == default

# Bad switches are the client's error, named.
for bad, param in [
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"chat_template_kwargs": "enable_thinking=false"}, "chat_template_kwargs"),
    ({"chat_template_kwargs": {"add_generation_prompt": False}}, "chat_template_kwargs"),
    ({"chat_template_kwargs": {f"k{i}": i for i in range(100)}}, "chat_template_kwargs"),
]:
    try:
        client.chat.completions.create(model=model, messages=ask, max_tokens=2, extra_body=bad)
    except openai.BadRequestError as e:
        assert e.body["param"] == param, (bad, e.body)
    else:
        raise AssertionError(f"{bad} was accepted")

print("reasoning ok")
