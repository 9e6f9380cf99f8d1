"""The Responses API through the real openai SDK against model-runner on the default model: create (text,
usage, output_text), the stream helper and raw streamed events (order, sequence numbers), a function tool
round trip over previous_response_id, text.format json_schema validated with jsonschema, retrieve /
input_items / delete, and errors (unknown model 404, bad input 400, unknown previous_response_id 404,
background 400). Prints `STORED <id>` for the restart check and exits non-zero on the first broken
expectation."""
import json
import os

import httpx
import jsonschema
import openai

base_url = os.environ["BASE_URL"]
client = openai.OpenAI(base_url=base_url, api_key="unused")
model = os.environ["MODEL"]

# Text: output_text, usage, the echoed request.
r = client.responses.create(
    model=model,
    instructions="You are terse.",
    input="What is the capital of France?",
    max_output_tokens=32,
    temperature=0,
    metadata={"suite": "responses"},
)
assert r.object == "response" and r.id.startswith("resp_"), r
assert r.status in ("completed", "incomplete"), r
assert r.output_text.strip(), r
message = r.output[0]
assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_"), message
assert message.content[0].type == "output_text" and message.content[0].annotations == [], message
assert r.usage.input_tokens > 5 and 0 < r.usage.output_tokens <= 32, r.usage
assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens, r.usage
assert r.usage.output_tokens_details.reasoning_tokens == 0 and r.usage.input_tokens_details.cached_tokens >= 0
assert r.instructions == "You are terse." and r.metadata == {"suite": "responses"} and r.store is True, r
assert r.model == model and r.max_output_tokens == 32, r

# max_output_tokens reached: incomplete, with the reason.
short = client.responses.create(model=model, input="Count from 1 to 100.", max_output_tokens=5, temperature=0)
assert short.status == "incomplete" and short.incomplete_details.reason == "max_output_tokens", short
assert short.usage.output_tokens == 5, short.usage

# The stream helper: text deltas add up to the final response's text.
deltas = []
kinds = []
with client.responses.stream(model=model, input="Say hello.", max_output_tokens=120, temperature=0) as stream:
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
    final = stream.get_final_response()
assert final.output_text == "".join(deltas) and final.output_text.strip(), (final, deltas)
assert kinds[:2] == ["response.created", "response.in_progress"], kinds
assert kinds[-1] in ("response.completed", "response.incomplete"), kinds
for expected in ["response.output_item.added", "response.content_part.added", "response.output_text.done",
                 "response.content_part.done", "response.output_item.done"]:
    assert expected in kinds, (expected, kinds)
order = [kinds.index(k) for k in ["response.output_item.added", "response.content_part.added",
                                  "response.output_text.delta", "response.output_text.done",
                                  "response.content_part.done", "response.output_item.done"]]
assert order == sorted(order), kinds

# create(stream=True): every event numbered in order.
numbers = [e.sequence_number for e in client.responses.create(model=model, input="Hi", max_output_tokens=8, stream=True)]
assert numbers == list(range(len(numbers))), numbers

# A function tool round trip: forced call, its output sent back over previous_response_id.
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
           "additionalProperties": False}
TOOLS = [{"type": "function", "name": "get_weather", "description": "Current weather for a city",
          "parameters": WEATHER, "strict": True}]
called = client.responses.create(model=model, input="What's the weather in Paris?", tools=TOOLS,
                                 tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=60,
                                 temperature=0)
calls = [item for item in called.output if item.type == "function_call"]
assert calls and calls[0].name == "get_weather" and calls[0].id.startswith("fc_") and calls[0].call_id, called
jsonschema.validate(json.loads(calls[0].arguments), WEATHER)
assert called.tools[0].name == "get_weather" and called.tool_choice.name == "get_weather", called
answered = client.responses.create(
    model=model,
    previous_response_id=called.id,
    input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"}],
    tools=TOOLS,
    tool_choice="none",
    max_output_tokens=40,
    temperature=0,
)
assert answered.previous_response_id == called.id and answered.output_text.strip(), answered


# The streamed call: argument deltas add up to the arguments.
arg_deltas = []
with client.responses.stream(model=model, input="Weather in Oslo?", tools=TOOLS, tool_choice="required",
                             max_output_tokens=60, temperature=0) as stream:
    for event in stream:
        if event.type == "response.function_call_arguments.delta":
            arg_deltas.append(event.delta)
    streamed = stream.get_final_response()
streamed_calls = [item for item in streamed.output if item.type == "function_call"]
assert streamed_calls and streamed_calls[0].arguments == "".join(arg_deltas), (streamed, arg_deltas)
jsonschema.validate(json.loads(streamed_calls[0].arguments), WEATHER)

# text.format json_schema: the answer parses and validates.
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}
structured = client.responses.create(model=model, input="Invent a person.", max_output_tokens=80, temperature=0,
                                     text={"format": {"type": "json_schema", "name": "person", "schema": PERSON,
                                                      "strict": True}})
jsonschema.validate(json.loads(structured.output_text), PERSON)
assert structured.text.format.type == "json_schema", structured.text

# Retrieve, input_items, delete.
got = client.responses.retrieve(r.id)
assert got.id == r.id and got.output_text == r.output_text, got
items = client.responses.input_items.list(r.id)
assert len(items.data) == 1 and items.data[0].type == "message" and items.data[0].role == "user", items
assert items.first_id == items.data[0].id and items.has_more is False, items
many = client.responses.create(model=model, max_output_tokens=4, input=[
    {"role": "user", "content": "one"}, {"role": "assistant", "content": "two"}, {"role": "user", "content": "three"}])
page = client.responses.input_items.list(many.id, limit=2, order="asc")
assert [i.content[0].text for i in page.data] == ["one", "two"] and page.has_more, page
rest = client.responses.input_items.list(many.id, limit=2, order="asc", after=page.last_id)
assert [i.content[0].text for i in rest.data] == ["three"] and not rest.has_more, rest
deleted = client.responses.delete(many.id)
try:
    client.responses.retrieve(many.id)
    raise AssertionError("a deleted response was found")
except openai.NotFoundError:
    pass
unstored = client.responses.create(model=model, input="Hi", max_output_tokens=4, store=False)
try:
    client.responses.retrieve(unstored.id)
    raise AssertionError("store=false was stored")
except openai.NotFoundError:
    pass

# Errors, in OpenAI's shape.
try:
    client.responses.create(model="no-such-model", input="hi")
    raise AssertionError("unknown model accepted")
except openai.NotFoundError as e:
    assert e.body["code"] == "model_not_found", e.body
for bad in [{"input": 42}, {"input": [{"type": "nope"}]}, {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            {"input": "hi", "background": True}, {"input": "hi", "metadata": {str(i): "v" for i in range(17)}},
            {"input": "hi", "tools": [{"type": "web_search"}]}, {"input": "hi", "temperature": "hot"},
            {"input": "hi", "text": {"format": {"type": "json_schema", "schema": {}}}}]:
    try:
        client.responses.create(model=model, **bad)
        raise AssertionError(f"accepted {bad}")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and e.body["type"] == "invalid_request_error", e.body
try:
    client.responses.create(model=model, input="hi", previous_response_id="resp_doesnotexist")
    raise AssertionError("unknown previous_response_id accepted")
except openai.NotFoundError as e:
    assert "not found" in e.body["message"], e.body
for bad_id in ["resp_x' OR '1'='1", "../../etc/passwd", "resp_" + "a" * 500]:
    status = httpx.get(f"{base_url}/responses/{bad_id}").status_code
    assert status == 404, (bad_id, status)
deep = {"role": "user", "content": "x"}
for _ in range(200):
    deep = {"role": "user", "content": [deep]}
status = httpx.post(f"{base_url}/responses", json={"model": model, "input": [deep]}).status_code
assert status == 400, status

print(f"STORED {r.id}")
print("responses API checks passed")
