"""The anthropic SDK's MCP connector (`mcp_servers`, beta) against the gateway: the default model is made
to call the real filesystem server, the server runs the call in its loop, and the answer shows it as
`mcp_tool_use` / `mcp_tool_result` blocks, whole and streamed. A `url` in the request is never used: the
name picks a configured server, and an unknown name is a 400. Env: BASE_URL, MODEL, FILES_DIR."""
import os

import anthropic

client = anthropic.Anthropic(base_url=os.environ["BASE_URL"].removesuffix("/v1"), api_key="unused", max_retries=0)
MODEL = os.environ["MODEL"]
FILES_DIR = os.environ["FILES_DIR"]
# The URL is a decoy: the server must not connect to it.
FS = {"type": "url", "url": "http://127.0.0.1:9/mcp", "name": "fs",
      "tool_configuration": {"allowed_tools": ["list_directory"]}}
request = dict(
    model=MODEL,
    max_tokens=96,
    temperature=0,
    messages=[{"role": "user", "content": f"List the files in {FILES_DIR}"}],
    mcp_servers=[FS],
    tool_choice={"type": "any"},
    betas=["mcp-client-2025-04-04"],
)


def check(content):
    uses = [b for b in content if b.type == "mcp_tool_use"]
    results = [b for b in content if b.type == "mcp_tool_result"]
    assert uses and results, content
    assert uses[0].name == "list_directory" and uses[0].server_name == "fs", uses[0]
    assert uses[0].id.startswith("mcptoolu_") and isinstance(uses[0].input, dict), uses[0]
    # Calls of one round run concurrently: each result names its call, in whatever order they end.
    assert sorted(r.tool_use_id for r in results) == sorted(u.id for u in uses), (uses, results)
    ok = [r for r in results if not r.is_error]
    assert ok, results
    text = ok[0].content if isinstance(ok[0].content, str) else "".join(t.text for t in ok[0].content)
    assert "alpha.txt" in text and "beta.md" in text, text
    return uses, results


whole = client.beta.messages.create(**request)
check(whole.content)
assert whole.stop_reason in ("end_turn", "max_tokens"), whole.stop_reason
assert whole.usage.output_tokens > 0, whole.usage

with client.beta.messages.stream(**request) as stream:
    kinds = [event.type for event in stream]
    final = stream.get_final_message()
check(final.content)
assert kinds[0] == "message_start" and "message_stop" in kinds, kinds

# The history with MCP blocks goes back in as the assistant's turn.
follow = client.beta.messages.create(
    model=MODEL, max_tokens=16, temperature=0, betas=["mcp-client-2025-04-04"],
    messages=request["messages"] + [{"role": "assistant", "content": whole.content},
                                    {"role": "user", "content": "Thanks."}])
assert follow.type == "message", follow

try:
    client.beta.messages.create(**{**request, "mcp_servers": [{**FS, "name": "elsewhere"}]})
    raise AssertionError("an unknown MCP server name must be refused")
except anthropic.BadRequestError as e:
    assert e.body["error"]["type"] == "invalid_request_error", e.body
    assert "elsewhere" in e.body["error"]["message"], e.body
print("anthropic mcp ok")
