"""A small Ollama client: /api/chat streaming NDJSON, /api/tags, /api/ps, /api/show, /api/embed."""
import json
import os
import urllib.error
import urllib.request

base = os.environ["BASE_URL"].removesuffix("/v1")
model = os.environ["MODEL"]


def call(path, body=None, method=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method or ("POST" if data else "GET"),
                                 headers={"content-type": "application/json"})
    return urllib.request.urlopen(req, timeout=120)


tags = json.load(call("/api/tags"))
assert any(m["name"] == model for m in tags["models"]), tags
assert tags["models"][0]["details"]["quantization_level"] == "Q4_1", tags

lines = []
with call("/api/chat", {"model": model, "messages": [{"role": "user", "content": "Say hello."}],
                        "options": {"temperature": 0, "num_predict": 12}}) as response:
    assert response.headers["content-type"].startswith("application/x-ndjson"), response.headers
    for raw in response:
        if raw.strip():
            lines.append(json.loads(raw))
assert len(lines) >= 2 and not lines[0]["done"], lines
assert all(l["message"]["role"] == "assistant" for l in lines)
final = lines[-1]
assert final["done"] and final["done_reason"] in ("stop", "length"), final
assert final["eval_count"] <= 12 and final["prompt_eval_count"] > 0, final
text = "".join(l["message"]["content"] for l in lines)
assert text.strip(), lines

whole = json.load(call("/api/chat", {"model": model, "stream": False, "messages": [{"role": "user", "content": "Say hello."}],
                                     "options": {"temperature": 0, "num_predict": 12}}))
assert whole["message"]["content"] == text, (whole, text)

ps = json.load(call("/api/ps"))
assert ps["models"][0]["name"] == model and ps["models"][0]["context_length"] > 0, ps
show = json.load(call("/api/show", {"model": model}))
assert show["details"]["family"] == "llama" and "general.architecture" in show["model_info"], show
embed = json.load(call("/api/embed", {"model": model, "input": ["hello", "world"]}))
assert len(embed["embeddings"]) == 2 and len(embed["embeddings"][0]) == 576, len(embed["embeddings"][0])
norm = sum(x * x for x in embed["embeddings"][0]) ** 0.5
assert abs(norm - 1.0) < 1e-3, norm
# format: a JSON Schema the answer must follow; "json" for any JSON.
schema = {"type": "object", "properties": {"capital": {"type": "string"}, "population": {"type": "integer"}},
          "required": ["capital", "population"]}
formatted = json.load(call("/api/chat", {"model": model, "stream": False, "format": schema,
                                         "messages": [{"role": "user", "content": "Capital of France?"}],
                                         "options": {"temperature": 0}}))
answer = json.loads(formatted["message"]["content"])
assert isinstance(answer["capital"], str) and isinstance(answer["population"], int), answer
generated = json.load(call("/api/generate", {"model": model, "stream": False, "format": "json", "prompt": "Three fruits",
                                             "options": {"temperature": 0, "num_predict": 60}}))
json.loads(generated["response"])

# tools: calls come back as message.tool_calls with arguments as an object.
weather = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
lines = []
with call("/api/chat", {"model": model, "tools": weather, "options": {"temperature": 0},
                        "messages": [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]}) as response:
    lines = [json.loads(raw) for raw in response if raw.strip()]
calls = [c for l in lines for c in l["message"].get("tool_calls", [])]
content = "".join(l["message"]["content"] for l in lines)
assert lines[-1]["done"], lines
assert calls or content.strip(), lines
for c in calls:
    assert c["function"]["name"] == "get_weather" and isinstance(c["function"]["arguments"]["city"], str), c
try:
    call("/api/chat", {"model": model, "format": 42, "messages": [{"role": "user", "content": "hi"}]})
    raise AssertionError("a bad format was accepted")
except urllib.error.HTTPError as e:
    assert e.code == 400, e.code
print("ollama API checks passed")
