"""The anthropic SDK against model-runner's Messages API on the default model: messages.create, the
messages.stream helper (text, and a forced tool_use streamed as input_json_delta), a tool round trip,
stop sequences, count_tokens, the /anthropic prefix, and errors raised as the SDK's own exceptions.
With API_KEY set (a server started with --api-key) it checks x-api-key and bearer auth instead.
Exits non-zero on the first broken expectation."""
import json
import os
import sys

import anthropic
import httpx
import jsonschema

BASE_URL = os.environ["BASE_URL"].removesuffix("/v1")
MODEL = os.environ["MODEL"]
API_KEY = os.environ.get("API_KEY")

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
TOOLS = [{"name": "get_weather", "description": "Current weather for a city", "input_schema": WEATHER}]
ASK = [{"role": "user", "content": "What is the capital of France?"}]


def expect_error(kind, call, status, error_type, needle=None):
    """`call` must raise the SDK's `kind` with `status` and Anthropic's error body of `error_type`."""
    try:
        call()
    except kind as e:
        assert e.status_code == status, (e.status_code, e.body)
        assert isinstance(e.body, dict) and e.body.get("type") == "error", e.body
        assert e.body["error"]["type"] == error_type, e.body
        message = e.body["error"]["message"]
        assert isinstance(message, str) and message, e.body
        if needle:
            assert needle in message, message
        return message
    raise AssertionError(f"expected {kind.__name__} ({status} {error_type})")


if API_KEY:
    # x-api-key, as the SDK sends api_key, and Authorization: Bearer, as it sends auth_token.
    keyed = anthropic.Anthropic(base_url=BASE_URL, api_key=API_KEY, max_retries=0)
    r = keyed.messages.create(model=MODEL, max_tokens=8, messages=ASK, temperature=0)
    assert r.type == "message", r
    bearer = anthropic.Anthropic(base_url=BASE_URL, auth_token=API_KEY, api_key=None, max_retries=0)
    assert bearer.messages.count_tokens(model=MODEL, messages=ASK).input_tokens > 0
    wrong = anthropic.Anthropic(base_url=BASE_URL, api_key="wrong-key", max_retries=0)
    expect_error(anthropic.AuthenticationError, lambda: wrong.messages.create(model=MODEL, max_tokens=8, messages=ASK),
                 401, "authentication_error", "x-api-key")
    expect_error(anthropic.AuthenticationError, lambda: wrong.messages.count_tokens(model=MODEL, messages=ASK),
                 401, "authentication_error")
    print("anthropic auth ok")
    sys.exit(0)

client = anthropic.Anthropic(base_url=BASE_URL, api_key="unused", max_retries=0)

# messages.create: a whole message.
r = client.messages.create(model=MODEL, max_tokens=24, system="You are terse.", messages=ASK, temperature=0,
                           metadata={"user_id": "test-user"})
assert r.type == "message" and r.role == "assistant" and r.id.startswith("msg_"), r
assert r.model == MODEL, r.model
assert r.content and r.content[0].type == "text" and r.content[0].text.strip(), r
assert r.stop_reason in ("end_turn", "max_tokens"), r.stop_reason
assert r.stop_sequence is None, r
assert r.usage.input_tokens + (r.usage.cache_read_input_tokens or 0) > 5, r.usage
assert 0 < r.usage.output_tokens <= 24, r.usage
plain = r.content[0].text

# System as text blocks, top_k / top_p accepted.
blocks = client.messages.create(model=MODEL, max_tokens=8, messages=ASK, temperature=0, top_k=20, top_p=0.9,
                                system=[{"type": "text", "text": "You are terse."}])
assert blocks.content[0].type == "text", blocks

limited = client.messages.create(model=MODEL, max_tokens=5, temperature=0,
                                 messages=[{"role": "user", "content": "Count from 1 to 100."}])
assert limited.stop_reason == "max_tokens" and limited.usage.output_tokens == 5, limited

# A stop sequence that is hit: stop_reason and stop_sequence say which.
stopped = client.messages.create(model=MODEL, max_tokens=40, temperature=0, stop_sequences=[" "], messages=ASK)
assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == " ", stopped
assert " " not in stopped.content[0].text, stopped

# messages.stream: text deltas reassemble into the final message, equal to the whole answer.
with client.messages.stream(model=MODEL, max_tokens=24, system="You are terse.", messages=ASK, temperature=0) as s:
    streamed = "".join(s.text_stream)
    final = s.get_final_message()
assert streamed == final.content[0].text, (streamed, final)
assert streamed == plain, (streamed, plain)
assert final.stop_reason in ("end_turn", "max_tokens") and final.usage.output_tokens > 0, final

# The raw events, in Anthropic's order.
raw = client.messages.create(model=MODEL, max_tokens=8, messages=ASK, temperature=0, stream=True)
kinds = [event.type for event in raw]
assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
assert kinds[-2] == "message_delta", kinds
for kind in ("content_block_start", "content_block_delta", "content_block_stop"):
    assert kind in kinds, kinds

with client.messages.stream(model=MODEL, max_tokens=40, temperature=0, stop_sequences=[" "], messages=ASK) as s:
    final = s.get_final_message()
assert final.stop_reason == "stop_sequence" and final.stop_sequence == " ", final

# A forced tool: a tool_use block whose input follows the schema.
forced = dict(model=MODEL, max_tokens=120, temperature=0, tools=TOOLS,
              tool_choice={"type": "tool", "name": "get_weather"},
              messages=[{"role": "user", "content": "What's the weather in Paris?"}])
called = client.messages.create(**forced)
uses = [b for b in called.content if b.type == "tool_use"]
assert len(uses) >= 1 and called.stop_reason == "tool_use", called
use = uses[0]
assert use.id.startswith("toolu_") and use.name == "get_weather" and isinstance(use.input, dict), use
jsonschema.validate(use.input, WEATHER)

# Streamed: the input arrives as input_json_delta and the helper reassembles it.
partials = []
with client.messages.stream(**forced) as s:
    for event in s:
        if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
            partials.append(event.delta.partial_json)
    final = s.get_final_message()
assert partials, "no input_json_delta events"
streamed_uses = [b for b in final.content if b.type == "tool_use"]
assert streamed_uses and final.stop_reason == "tool_use", final
assert json.loads("".join(partials)) == streamed_uses[0].input, (partials, streamed_uses[0])
jsonschema.validate(streamed_uses[0].input, WEATHER)
assert streamed_uses[0].input == use.input, (streamed_uses[0].input, use.input)

# tool_choice any calls; none never does; disable_parallel_tool_use gives one call.
anyr = client.messages.create(**{**forced, "tool_choice": {"type": "any", "disable_parallel_tool_use": True}})
assert [b.type for b in anyr.content if b.type == "tool_use"] == ["tool_use"], anyr
never = client.messages.create(**{**forced, "max_tokens": 24, "tool_choice": {"type": "none"}})
assert all(b.type == "text" for b in never.content) and never.stop_reason != "tool_use", never

# The round trip: the SDK's own content back as the assistant turn, then the tool's result.
history = [
    {"role": "user", "content": "What's the weather in Paris?"},
    {"role": "assistant", "content": called.content},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": use.id, "content": [{"type": "text", "text": "18 C and sunny"}]},
    ]},
]
answer = client.messages.create(model=MODEL, max_tokens=48, temperature=0, tools=TOOLS, messages=history)
assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use"), answer
assert answer.content, answer
errored = history[:2] + [{"role": "user", "content": [
    {"type": "tool_result", "tool_use_id": use.id, "content": "service down", "is_error": True}]}]
assert client.messages.create(model=MODEL, max_tokens=8, tools=TOOLS, messages=errored).type == "message"

# thinking is accepted (and thinking blocks in history are dropped from the prompt).
thought = client.messages.create(model=MODEL, max_tokens=1100, temperature=0, stop_sequences=["\n", "."], messages=[
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": [{"type": "thinking", "thinking": "greet back", "signature": "sig"},
                                      {"type": "redacted_thinking", "data": "opaque"},
                                      {"type": "text", "text": "Hello!"}]},
    {"role": "user", "content": "What is 2+2?"},
], thinking={"type": "enabled", "budget_tokens": 1024})
assert thought.type == "message", thought

# count_tokens: the prompt a request renders (tools included), as its usage reports it.
counted = client.messages.count_tokens(model=MODEL, system="You are terse.", messages=ASK)
assert counted.input_tokens == r.usage.input_tokens + (r.usage.cache_read_input_tokens or 0), (counted, r.usage)
with_tools = client.messages.count_tokens(model=MODEL, messages=forced["messages"], tools=TOOLS)
without = client.messages.count_tokens(model=MODEL, messages=forced["messages"])
assert with_tools.input_tokens > without.input_tokens > 0, (with_tools, without)

# The same API under /anthropic, with Anthropic's headers.
prefixed = anthropic.Anthropic(base_url=BASE_URL + "/anthropic", api_key="unused", max_retries=0)
p = prefixed.messages.create(model=MODEL, max_tokens=4, messages=ASK,
                             extra_headers={"anthropic-beta": "fine-grained-tool-streaming-2025-05-14"})
assert p.type == "message", p

# Errors, as the SDK raises them.
message = expect_error(anthropic.BadRequestError, lambda: client.post(
    "/v1/messages", cast_to=httpx.Response, body={"model": MODEL, "messages": ASK}), 400, "invalid_request_error")
assert "max_tokens" in message, message
expect_error(anthropic.NotFoundError, lambda: client.messages.create(
    model="ai/no-such-model", max_tokens=8, messages=ASK), 404, "not_found_error")
expect_error(anthropic.BadRequestError, lambda: client.messages.create(model=MODEL, max_tokens=8, messages=[
    {"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "text", "text": "What is this?"}]}]), 400, "invalid_request_error", "image")
expect_error(anthropic.BadRequestError, lambda: client.messages.create(
    model=MODEL, max_tokens=8, messages=ASK, tools=[{"type": "web_search_20250305", "name": "web_search"}]),
    400, "invalid_request_error", "web_search_20250305")
bad_bodies = [
    {"model": MODEL, "max_tokens": 8, "messages": "hi"},
    {"model": MODEL, "max_tokens": "eight", "messages": ASK},
    {"model": MODEL, "max_tokens": 0, "messages": ASK},
    {"model": MODEL, "max_tokens": -5, "messages": ASK},
    {"model": MODEL, "max_tokens": 10**9, "messages": ASK},
    {"model": MODEL, "max_tokens": 10**30, "messages": ASK},
    {"model": MODEL, "max_tokens": 8, "messages": []},
    {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": 3}]},
    {"model": MODEL, "max_tokens": 8, "messages": [{"role": "system", "content": "x"}]},
    {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "text", "text": ["x"]}]}]},
    {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "hologram"}]}]},
    {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": [{"text": "no type"}]}]},
    {"model": MODEL, "max_tokens": 8, "messages": ASK, "temperature": "hot"},
    {"model": MODEL, "max_tokens": 8, "messages": ASK, "temperature": 7},
    {"model": MODEL, "max_tokens": 8, "messages": ASK, "system": 5},
    {"model": MODEL, "max_tokens": 8, "messages": ASK, "tools": {"name": "x"}},
    {"model": MODEL, "max_tokens": 8, "messages": ASK, "tools": [{"name": "x", "input_schema": "object"}]},
    {"model": MODEL, "max_tokens": 8, "messages": ASK, "tools": [{"name": "bad name!", "input_schema": {}}]},
    {"model": MODEL, "max_tokens": 8, "messages": ASK, "tool_choice": {"type": "sometimes"}},
    {"model": MODEL, "max_tokens": 8, "messages": ASK, "tools": TOOLS, "tool_choice": {"type": "tool", "name": "nope"}},
    {"model": MODEL, "max_tokens": 8, "messages": ASK, "stop_sequences": "x"},
    {"model": MODEL, "max_tokens": 2048, "messages": ASK, "thinking": {"type": "enabled", "budget_tokens": 10}},
    {"model": MODEL, "max_tokens": 8, "messages": ASK, "thinking": {"type": "sometimes"}},
    {"model": MODEL, "max_tokens": 8, "messages": ASK, "metadata": "user"},
    {"model": MODEL, "max_tokens": 8, "messages": ASK, "mcp_servers": [{"type": "url", "url": "http://127.0.0.1:1/mcp", "name": "fs"}]},
    {"model": MODEL, "max_tokens": 8, "messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": "Paris"}]}]},
    # Deeper than any parser should follow.
    {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": json.loads("[" * 500 + "]" * 500)}]},
]
for body in bad_bodies:
    expect_error(anthropic.BadRequestError, lambda: client.post("/v1/messages", cast_to=httpx.Response, body=body),
                 400, "invalid_request_error")
expect_error(anthropic.BadRequestError, lambda: client.post(
    "/v1/messages/count_tokens", cast_to=httpx.Response, body={"model": MODEL, "messages": [{"role": "user"}]}),
    400, "invalid_request_error")
# Many blocks: answered or refused for the context, never a server error.
many = [{"type": "text", "text": "hello "} for _ in range(3000)]
try:
    client.messages.create(model=MODEL, max_tokens=4, messages=[{"role": "user", "content": many}])
except anthropic.BadRequestError as e:
    assert e.body["error"]["type"] == "invalid_request_error", e.body
print("anthropic messages ok")
