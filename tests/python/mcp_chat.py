"""The OpenAI SDK against chat completions with MCP tools: the default model is made to call the real
filesystem server, the server runs the call, and `mcp_calls` holds the real listing; streamed, each call
shows up as `mcp_call` events. Also measures the prompt with every tool against discovery mode.
Env: BASE_URL, MODEL, FILES_DIR."""
import json
import os

from openai import OpenAI

client = OpenAI(base_url=os.environ["BASE_URL"], api_key="unused")
MODEL = os.environ["MODEL"]
FILES_DIR = os.environ["FILES_DIR"]
ask = [{"role": "user", "content": f"List the files in {FILES_DIR}"}]
# The directory listing, forced: run whole and streamed.
list_files = dict(
    model=MODEL,
    messages=ask,
    tools=[{"type": "mcp", "server_label": "fs", "allowed_tools": ["list_directory"]}],
    tool_choice="required",
    max_tokens=96,
    temperature=0,
)

completion = client.chat.completions.create(**list_files)
body = completion.model_dump()
calls = body["mcp_calls"]
assert calls, body
first = calls[0]
assert first["name"] == "fs__list_directory" and first["server"] == "fs", first
listing = [c for c in calls if not c["is_error"]]
assert listing, f"no call succeeded: {calls}"
assert "alpha.txt" in listing[0]["result"] and "beta.md" in listing[0]["result"], listing[0]
assert body["choices"][0]["finish_reason"] in ("stop", "length"), body["choices"][0]
assert body["usage"]["prompt_tokens"] > 0
print("loop:", json.dumps([{k: c[k] for k in ("name", "arguments", "is_error")} for c in calls]))

# Streamed: progress events for each call, then the answer and the summary.
events = []
stream = client.chat.completions.create(**list_files, stream=True)
finish = None
summary = None
content = []
for chunk in stream:
    extra = chunk.model_extra or {}
    if chunk.choices and chunk.choices[0].delta.content:
        assert finish is None, "content after the finish"
        content.append(chunk.choices[0].delta.content)
    if "mcp_call" in extra:
        events.append(extra["mcp_call"])
    if chunk.choices and chunk.choices[0].finish_reason:
        finish = chunk.choices[0].finish_reason
        summary = extra.get("mcp_calls")
statuses = [e["status"] for e in events]
assert "in_progress" in statuses and ("completed" in statuses or "failed" in statuses), events
assert any("alpha.txt" in (e.get("result") or "") for e in events), events
assert finish is not None and summary, (finish, summary)
streamed = "".join(content)
assert "tool_calls" not in streamed, f"calls are run by the server, not streamed as text: {streamed!r}"
print("streamed answer:", repr(streamed[:200]))

# A client function tool beside MCP tools comes back to the client as a normal tool call.
mixed = client.chat.completions.create(
    model=MODEL,
    messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    tools=[
        {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                          "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                         "required": ["city"]}}},
        {"type": "mcp", "server_label": "time"},
    ],
    tool_choice={"type": "function", "function": {"name": "get_weather"}},
    max_tokens=64,
    temperature=0,
)
choice = mixed.choices[0]
assert choice.finish_reason == "tool_calls", choice
assert choice.message.tool_calls[0].function.name == "get_weather", choice.message
assert "city" in json.loads(choice.message.tool_calls[0].function.arguments)

# Prompt size: every tool of every server against the two discovery meta-tools.
def prompt_tokens(tools):
    r = client.chat.completions.create(model=MODEL, messages=ask, tools=tools, max_tokens=1, temperature=0)
    return r.usage.prompt_tokens

labels = ["fs", "time"]
everything = prompt_tokens([{"type": "mcp", "server_label": l} for l in labels])
discovery = prompt_tokens([{"type": "mcp", "server_label": l, "discovery": True} for l in labels])
print(f"prompt tokens: all tools {everything}, discovery {discovery}")
assert discovery * 3 < everything, (everything, discovery)

# Unknown labels are the client's error.
try:
    client.chat.completions.create(model=MODEL, messages=ask, tools=[{"type": "mcp", "server_label": "nope"}])
    raise AssertionError("an unknown server_label must be refused")
except Exception as e:  # openai.BadRequestError
    assert getattr(e, "status_code", None) == 400, e
print("mcp chat ok")
