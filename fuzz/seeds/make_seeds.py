#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/seeds/<target>/ from what the tests use (requests, schemas, templates,
references, manifests) plus small synthesized GGUF headers. Deterministic; rerun after changing it:
    python3 fuzz/seeds/make_seeds.py
model_shapes and tokenizer_builder take structured (arbitrary) input and need no seeds."""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(data)


# --- gguf_header: small GGUF v2/v3 files, every metadata type, tensors with their data.
def gguf(version, metadata, tensors, truncate=0):
    def string(s):
        b = s.encode()
        return struct.pack("<Q", len(b)) + b

    def value(t, v):
        fmt = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
        if t == 8:
            return string(v)
        if t == 9:
            et, items = v
            return struct.pack("<IQ", et, len(items)) + b"".join(value(et, i) for i in items)
        return struct.pack(fmt[t], v)

    out = struct.pack("<IIQQ", 0x46554747, version, len(tensors), len(metadata))
    for k, t, v in metadata:
        out += string(k) + struct.pack("<I", t) + value(t, v)
    offset, infos, blobs = 0, b"", b""
    for name, dims, ggml_type, nbytes in tensors:
        infos += string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", ggml_type, offset)
        data = bytes((i * 37) & 0xFF for i in range(nbytes))
        pad = (-nbytes) % 32
        blobs += data + b"\0" * pad
        offset += nbytes + pad
    out += infos
    out += b"\0" * ((-len(out)) % 32)
    out += blobs
    return out[: len(out) - truncate] if truncate else out


META = [
    ("general.architecture", 8, "llama"),
    ("general.name", 8, "tiny"),
    ("llama.context_length", 4, 8192),
    ("llama.embedding_length", 4, 64),
    ("llama.block_count", 4, 1),
    ("llama.attention.head_count", 4, 4),
    ("llama.rope.freq_base", 6, 10000.0),
    ("general.file_type", 4, 3),
    ("tokenizer.ggml.model", 8, "gpt2"),
    ("tokenizer.ggml.tokens", 9, (8, ["a", "b", "ab", "<|im_end|>"])),
    ("tokenizer.ggml.token_type", 9, (5, [1, 1, 1, 3])),
    ("tokenizer.ggml.scores", 9, (6, [0.0, -1.0, -2.0, 0.0])),
    ("tokenizer.ggml.add_bos_token", 7, False),
    ("tokenizer.chat_template", 8, "{% for m in messages %}{{ m.content }}{% endfor %}"),
    ("misc.u8", 0, 7), ("misc.i8", 1, -7), ("misc.u16", 2, 700), ("misc.i16", 3, -700),
    ("misc.u64", 10, 1 << 40), ("misc.i64", 11, -(1 << 40)), ("misc.f64", 12, 0.5),
    ("misc.nested", 9, (9, [(4, [1, 2]), (8, ["x"])])),
]
TENSORS = [("token_embd.weight", [64, 4], 2, 4 * 64 // 32 * 20), ("output_norm.weight", [64], 0, 256)]
put("gguf_header", "v3_llama", gguf(3, META, TENSORS))
put("gguf_header", "v2_small", gguf(2, META[:3], TENSORS[1:]))
put("gguf_header", "split", gguf(3, [("general.architecture", 8, "qwen2"), ("split.count", 2, 3), ("split.no", 2, 0)], []))
put("gguf_header", "truncated_data", gguf(3, META[:2], TENSORS, truncate=40))
put("gguf_header", "alignment", gguf(3, [("general.alignment", 4, 64)] + META[:1], TENSORS))
put("gguf_header", "k_quants", gguf(3, META[:1], [("w", [256, 2], 12, 144 * 2), ("v", [256], 14, 210)]))

# --- chat_template: the templates the tests render, and some that push on the fuel and output caps.
CHATML = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
SMOLLM2 = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
put("chat_template", "chatml", CHATML)
put("chat_template", "smollm2", SMOLLM2)
hermes = os.path.join(HERE, "../../tests/fixtures/hermes-chat-template.jinja")
if os.path.exists(hermes):
    put("chat_template", "hermes", open(hermes, "rb").read())
put("chat_template", "tojson", "{{ tools | tojson }}{{ messages | tojson(indent=4) }}")
put("chat_template", "raise", "{{ raise_exception('roles must alternate') }}")
put("chat_template", "strip", "{% for m in messages %}{{ m.content.strip() | trim }}{{ m.role.upper() }}{% endfor %}")
put("chat_template", "loop_bomb", "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}")
put("chat_template", "string_bomb", "{% set s = 'x' * 1000000 %}{% for i in range(1000) %}{{ s }}{% endfor %}")
put("chat_template", "format_width", "{{ '{:>999999999}'.format('x') }}{{ '%0999999d' % 1 }}")
put("chat_template", "recursion", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")
put("chat_template", "strftime", "{{ strftime_now('%Y-%m-%d %Q') }}{{ bos_token }}{{ eos_token }}")
put("chat_template", "tool_calls", "{% for m in messages %}{% if m.tool_calls %}{% for c in m.tool_calls %}{{ c.function.name }}{{ c.function.arguments | tojson }}{% endfor %}{% endif %}{% if m.role == 'tool' %}{{ m.tool_call_id }}{{ m.name }}{% endif %}{% endfor %}{% if tools %}{% for t in tools %}{{ t.function.parameters | tojson }}{% endfor %}{% endif %}")
put("chat_template", "namespace", "{% set ns = namespace(x=0) %}{% for m in messages %}{% set ns.x = ns.x + 1 %}{% endfor %}{{ ns.x }}{{ messages[-1]['content'][::-1] }}{{ messages|map(attribute='role')|join(',') }}")

# --- tool_call_parser: byte 0 picks the format (0 generic, 1 hermes, 2 mistral, 3 llama3), byte 1 the split.
PARSER = [
    (0, r'{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "now", "arguments": {}}]}'),
    (0, r'{"response": "Hi \"you\"\n\u00e9\ud83d\ude00!"}'),
    (0, "just text"),
    (1, 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>'),
    (1, "a < b and <tool_c"),
    (1, "<tool_call>not json</tool_call>"),
    (1, '<tool_call>{"city": 1}'),
    (2, '[TOOL_CALLS][{"name": "f", "arguments": {"x": 1}}, {"name": "g", "arguments": {}}]'),
    (2, '[{"name": "f", "arguments": {"x": 1}}]'),
    (3, '{"name": "f", "parameters": {"x": [1, 2]}}'),
    (3, '<|python_tag|>{"name": "f", "parameters": {"s": "a\\"b}"}}'),
    (3, "The answer is 4."),
]
for i, (fmt, text) in enumerate(PARSER):
    put("tool_call_parser", f"case{i:02}", bytes([fmt, 7 * i + 3]) + text.encode())

# --- json_schema_grammar: byte 0 seeds the token choice; the rest is a schema (or a Lark grammar).
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
           "days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city", "unit"]}
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0, "maximum": 150},
          "role": {"type": "string", "enum": ["engineer", "artist", "doctor", "teacher"]},
          "address": {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}}, "required": ["city", "country"]},
          "skills": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 4}},
          "required": ["name", "age", "role", "address", "skills"]}
SCHEMAS = [
    WEATHER, PERSON, {}, True, {"type": "object"},
    {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}},
    {"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"},
    {"anyOf": [{"type": "string", "pattern": "^[a-z]{2,5}$"}, {"type": "number", "multipleOf": 0.5}]},
    {"type": "array", "prefixItems": [{"const": 1}, {"enum": ["x", None]}], "items": False},
    {"type": "string", "format": "date-time"},
    {"type": "object", "patternProperties": {"^x-": {"type": "integer"}}, "additionalProperties": {"type": "boolean"}},
    {"oneOf": [{"type": "null"}, {"type": "object", "properties": {"k": {"type": "string", "maxLength": 3}}, "required": ["k"]}], "x-guidance": {"whitespace_flexible": True}},
]
for i, schema in enumerate(SCHEMAS):
    put("json_schema_grammar", f"schema{i:02}", bytes([i]) + json.dumps(schema).encode())
put("json_schema_grammar", "lark_json", b"\x05" + b'start: "{" %json {"type": "object"} "}"\n')
put("json_schema_grammar", "lark", b"\x09" + b'start: item+\nitem: /[a-z]+/ " " | "x" NUMBER\nNUMBER: /[0-9]+/\n')

# --- reference: the references the tests parse.
REFS = ["ai/smollm2", "smollm2", "smollm2:135M-Q4_1", "docker.io/ai/smollm2:latest", "index.docker.io/ai/smollm2",
        "127.0.0.1:5000/ai/smollm2:v1", "localhost:5000/a/b:c", "localhost/x/y", "host:99999/repo", "ai//smollm2",
        "ai/smollm2:", "ai/smollm2:bad tag", "a/b:-tag", "Upper/Case", "-leading/dash", "ai/smollm2@md5:abcd",
        "ai/smollm2@sha256:" + "ab" * 32, "ai/smollm2:v1@sha256:" + "0f" * 32, "hf.co/bartowski/SmolLM2-GGUF:Q4_K_M",
        "huggingface.co/org/repo", "hf.co/only-org", "[::1]:5000/ai/x", " ai/smollm2 "]
for i, r in enumerate(REFS):
    put("reference", f"ref{i:02}", r)

# --- manifest_config: manifests of each accepted shape, and config blobs.
def desc(media_type, size=1, title=None):
    d = {"mediaType": media_type, "digest": "sha256:" + "ab" * 32, "size": size}
    if title:
        d["annotations"] = {"org.opencontainers.image.title": title}
    return d

CFG01 = "application/vnd.docker.ai.model.config.v0.1+json"
CNCF = "application/vnd.cncf.model.config.v1+json"
GGUF_L = "application/vnd.docker.ai.gguf.v3"
for name, manifest in {
    "dmr": {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": desc(CFG01, 400),
            "layers": [desc(GGUF_L, 98362432, "model.gguf"), desc("application/vnd.docker.ai.license", 10, "LICENSE"),
                       desc("application/vnd.docker.ai.chat.template.jinja", 300, "template.jinja")]},
    "cncf": {"schemaVersion": 2, "config": desc(CNCF), "layers": [desc("application/vnd.cncf.model.weight.v1.gguf")],
             "annotations": {"a": "b"}},
    "shards": {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
               "config": desc("application/vnd.docker.ai.model.config.v0.2+json"),
               "layers": [desc(GGUF_L, 5, "m-00001-of-00002.gguf"), desc(GGUF_L, 5, "m-00002-of-00002.gguf"), desc("application/vnd.docker.ai.mmproj")]},
    "not_a_model": {"schemaVersion": 2, "config": desc("application/vnd.oci.image.config.v1+json"), "layers": [desc(GGUF_L)]},
}.items():
    put("manifest_config", name, json.dumps(manifest))
put("manifest_config", "config_dmr", json.dumps({"config": {"format": "gguf", "quantization": "Q4_1", "parameters": "134.52 M",
    "architecture": "llama", "size": "93.8MiB", "context_size": 8192, "gguf": {"general.name": "x"}},
    "descriptor": {"created": "2025-01-02T03:04:05Z"}, "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "ab" * 32]}}))
put("manifest_config", "config_cncf", '{"descriptor":{"createdAt":"2025-01-02T03:04:05Z"},"config":{"architecture":"llama","format":"gguf","paramSize":"135M","quantization":"Q4_1"},"modelfs":{"type":"layers","diffIds":[]}}')

# --- api_bodies: chat, completion and Ollama bodies as the tests send them.
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}}}]
BODIES = {
    "chat": {"model": "ai/smollm2", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
             "max_tokens": 16, "temperature": 0.7, "top_p": 0.9, "seed": 1, "stop": ["\n"], "stream": True,
             "stream_options": {"include_usage": True}, "logprobs": True, "top_logprobs": 2, "logit_bias": {"42": -100}, "n": 2},
    "chat_tools": {"model": "m", "messages": [{"role": "user", "content": "weather in Paris?"}], "tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False},
    "chat_named": {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "tools": TOOLS,
                   "tool_choice": {"type": "function", "function": {"name": "get_time"}}},
    "chat_roundtrip": {"model": "m", "messages": [{"role": "user", "content": "w?"}, {"role": "assistant", "content": None,
        "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "{\"temperature\": 21}"}], "tools": TOOLS},
    "chat_schema": {"model": "m", "messages": [{"role": "user", "content": "person"}], "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}},
    "chat_json": {"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}, "max_completion_tokens": 5},
    "chat_bad_tool": {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "bad name!"}}]},
    "completion": {"model": "m", "prompt": "Once upon a time", "max_tokens": 8, "echo": True, "logprobs": 1, "stop": "."},
    "completion_tokens": {"model": "m", "prompt": [[1, 2, 3], [4]], "best_of": 1, "suffix": ""},
    "embedding": {"model": "m", "input": ["a", "b"], "encoding_format": "float"},
    "ollama_chat": {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False, "keep_alive": "5m",
                    "options": {"temperature": 0, "num_predict": 8, "seed": 3, "stop": ["x"], "top_k": 40}, "format": "json", "tools": TOOLS},
    "ollama_generate": {"model": "m", "prompt": "hi", "system": "s", "raw": False, "keep_alive": 0, "options": {"num_predict": -1}, "format": WEATHER},
    "ollama_show": {"name": "m", "insecure": True},
}
for name, body in BODIES.items():
    put("api_bodies", name, json.dumps(body))
