"""The native Hermes/Qwen tool format (`<tool_call>` tags), with the default model packaged under a
Qwen 2.5-style chat template: forced calls validate, a named function is obeyed, streaming reassembles,
and a multi-turn conversation with the call and its result renders and answers."""
import json
import os

import jsonschema
import openai

client = openai.OpenAI(base_url=os.environ["BASE_URL"], api_key="unused")
model = os.environ["MODEL"]
CITY = {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": CITY}},
         {"type": "function", "function": {"name": "get_news", "description": "Headlines about a topic",
                                           "parameters": {"type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]}}}]
SCHEMAS = {"get_weather": CITY, "get_news": TOOLS[1]["function"]["parameters"]}

for i, prompt in enumerate(["Weather in Paris?", "Any news on football?", "Is it cold in Oslo?", "Headlines about science", "Rain in Rome?"]):
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], tools=TOOLS,
                                       tool_choice="required", temperature=0.7, seed=i, max_tokens=160)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls, r
    for call in choice.message.tool_calls:
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    assert "<tool_call>" not in (choice.message.content or ""), r

r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=TOOLS,
                                   tool_choice={"type": "function", "function": {"name": "get_news"}}, temperature=0, max_tokens=100)
assert {c.function.name for c in r.choices[0].message.tool_calls} == {"get_news"}, r

with client.chat.completions.stream(model=model, messages=[{"role": "user", "content": "Weather in Lima?"}], tools=TOOLS,
                                    tool_choice="required", temperature=0, max_tokens=100) as stream:
    for _ in stream:
        pass
    final = stream.get_final_completion()
call = final.choices[0].message.tool_calls[0]
jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])

messages = [{"role": "user", "content": "Weather in Lima?"}, final.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "{\"temperature\": 19}"}]
r = client.chat.completions.create(model=model, messages=messages, tools=TOOLS, temperature=0, max_tokens=40)
assert r.choices[0].message.content or r.choices[0].message.tool_calls, r
print("hermes tools ok")
