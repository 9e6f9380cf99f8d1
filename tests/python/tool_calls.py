"""Tool calls and structured output through the openai SDK against model-runner on the default model:
forced calls validate against their schema (plain and streamed through the SDK's stream helper),
json_schema answers validate, `none` never calls, a tool round trip completes, bad schemas are 400s.
Exits non-zero on the first broken expectation."""
import json
import os

import jsonschema
import openai

client = openai.OpenAI(base_url=os.environ["BASE_URL"], api_key="unused")
model = os.environ["MODEL"]

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit"],
}
TIME = {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather and forecast for a city", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Current time in a timezone", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
PROMPTS = [
    "What's the weather in Paris?", "Is it raining in London?", "Forecast for Tokyo for 3 days, in fahrenheit.",
    "How hot is it in Cairo?", "Weather in Oslo please", "Tell me the temperature in New York.",
    "Should I take an umbrella in Berlin?", "What time is it in UTC?", "Current time in Europe/Madrid?",
    "Weather for Sydney this week", "Is it snowing in Montreal?", "Temperature in Lima in celsius",
    "What's it like outside in Rome?", "Weather report for Mumbai", "What time is it in Asia/Tokyo?",
    "Do I need a coat in Chicago?", "Weather in Nairobi tomorrow", "How windy is it in Wellington?",
    "Climate right now in Reykjavik", "Give me the weather for Buenos Aires",
]


def check_call(call):
    assert call.type == "function", call
    assert call.id, call
    assert call.function.name in SCHEMAS, call
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


# tool_choice "required": 20 prompts and seeds, every call valid.
for i, prompt in enumerate(PROMPTS):
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], tools=TOOLS,
                                       tool_choice="required", temperature=0.8, seed=i, max_tokens=120)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", r
    assert choice.message.tool_calls, r
    for call in choice.message.tool_calls:
        check_call(call)

# A named function: the call is to it.
r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello there"}], tools=TOOLS,
                                   tool_choice={"type": "function", "function": {"name": "get_time"}}, temperature=0, max_tokens=80)
assert {c.function.name for c in r.choices[0].message.tool_calls} == {"get_time"}, r

# Streamed, reassembled by the SDK's stream helper; and the raw deltas have the shape OpenAI sends.
for i, prompt in enumerate(PROMPTS[:3]):
    with client.chat.completions.stream(model=model, messages=[{"role": "user", "content": prompt}], tools=TOOLS,
                                        tool_choice="required", temperature=0.8, seed=100 + i, max_tokens=120) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls", final
    for call in final.choices[0].message.tool_calls:
        check_call(call)
ids, names, arguments, finish = {}, {}, {}, None
for chunk in client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPTS[0]}], tools=TOOLS,
                                            tool_choice="required", temperature=0, max_tokens=120, stream=True):
    delta = chunk.choices[0].delta
    for tc in delta.tool_calls or []:
        if tc.id:
            assert tc.index not in ids, "a call's id is sent once"
            ids[tc.index] = tc.id
            names[tc.index] = tc.function.name
        arguments[tc.index] = arguments.get(tc.index, "") + (tc.function.arguments or "")
    finish = chunk.choices[0].finish_reason or finish
assert finish == "tool_calls" and sorted(ids) == list(range(len(ids))) and ids, (finish, ids)
for index, name in names.items():
    jsonschema.validate(json.loads(arguments[index]), SCHEMAS[name])

# response_format json_schema: nested objects, enums, arrays, required fields; 20 of 20 validate.
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "role": {"type": "string", "enum": ["engineer", "artist", "doctor", "teacher"]},
        "address": {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
                    "required": ["city", "country"]},
        "skills": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 4},
    },
    "required": ["name", "age", "role", "address", "skills"],
}
for i in range(20):
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": f"Invent person number {i} as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
        temperature=0.8, seed=i, max_tokens=200)
    assert r.choices[0].finish_reason == "stop", r
    jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)
r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "List three colours."}],
                                   response_format={"type": "json_object"}, temperature=0, max_tokens=120)
assert isinstance(json.loads(r.choices[0].message.content), dict), r

# tool_choice "none": never a call.
for i, prompt in enumerate(PROMPTS[:3]):
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], tools=TOOLS,
                                       tool_choice="none", temperature=0.8, seed=i, max_tokens=40)
    assert not r.choices[0].message.tool_calls and r.choices[0].finish_reason != "tool_calls", r
    assert isinstance(r.choices[0].message.content, str), r

# A round trip: the call, its result as a tool message, then the answer.
messages = [{"role": "user", "content": "What's the weather in Paris?"}]
r = client.chat.completions.create(model=model, messages=messages, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=120)
call = r.choices[0].message.tool_calls[0]
messages.append(r.choices[0].message.model_dump(exclude_none=True))
messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "clear"})})
r = client.chat.completions.create(model=model, messages=messages, tools=TOOLS, temperature=0, max_tokens=80)
assert r.choices[0].message.content or r.choices[0].message.tool_calls, r

# Bad requests: 400s naming the field.
for kwargs, param in [
    (dict(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}}), "response_format"),
    (dict(response_format={"type": "yaml"}), "response_format.type"),
    (dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "missing"}}), "tool_choice"),
    (dict(tools=[{"type": "function", "function": {"name": "bad name!"}}]), "tools[0].function.name"),
]:
    try:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=5, **kwargs)
    except openai.BadRequestError as e:
        assert e.body["param"] == param, (e.body, param)
    else:
        raise AssertionError(f"{kwargs} was accepted")
print("tool calls ok")
