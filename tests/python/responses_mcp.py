"""MCP tools in the Responses shape through the openai SDK, run by model-runner's gateway against the real
filesystem server on the default model: `mcp_list_tools` and `mcp_call` items (whole and streamed with
`response.mcp_call.*` events), the approval round trip (`mcp_approval_request`, then
`mcp_approval_response` over previous_response_id), a client-given server_url refused; then the OpenAI
Agents SDK with MCPServerStreamableHttp on our /mcp. Env: BASE_URL, MODEL, FILES_DIR, MCP_URL."""
import asyncio
import os

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["BASE_URL"], api_key="unused")
MODEL = os.environ["MODEL"]
FILES_DIR = os.environ["FILES_DIR"]
FS = {"type": "mcp", "server_label": "fs", "allowed_tools": ["list_directory"], "require_approval": "never"}
ask = dict(model=MODEL, input=f"List the files in {FILES_DIR}", tool_choice="required", max_output_tokens=96,
           temperature=0)

r = client.responses.create(tools=[FS], **ask)
kinds = [item.type for item in r.output]
assert kinds[0] == "mcp_list_tools", kinds
listing = r.output[0]
assert listing.server_label == "fs" and [t.name for t in listing.tools] == ["list_directory"], listing
calls = [item for item in r.output if item.type == "mcp_call"]
assert calls and calls[0].server_label == "fs" and calls[0].name == "list_directory", r.output
ok = [c for c in calls if not c.error]
assert ok and "alpha.txt" in ok[0].output, calls
assert r.status in ("completed", "incomplete"), r
print("mcp calls:", [(c.name, c.arguments, bool(c.error)) for c in calls], flush=True)

# Streamed (the raw events: the answer after the calls may reach max_output_tokens, and the stream
# helper's final response needs `response.completed`).
events = []
final = None
for event in client.responses.create(tools=[FS], stream=True, **ask):
    events.append(event.type)
    if event.type in ("response.completed", "response.incomplete"):
        final = event.response
assert final is not None, events
assert "response.mcp_list_tools.completed" in events, events
assert "response.mcp_call.completed" in events or "response.mcp_call.failed" in events, events
assert any(item.type == "mcp_call" for item in final.output), final.output
print("streamed:", [k for k in events if "mcp" in k], flush=True)

# Approval: the call waits for the client, then runs on its approval.
gated = dict(FS, require_approval="always")
waiting = client.responses.create(tools=[gated], **ask)
requests = [item for item in waiting.output if item.type == "mcp_approval_request"]
assert requests and requests[0].name == "list_directory" and requests[0].server_label == "fs", waiting.output
assert not any(item.type == "mcp_call" for item in waiting.output), waiting.output
approved = client.responses.create(
    model=MODEL, previous_response_id=waiting.id, tools=[gated], max_output_tokens=64, temperature=0,
    input=[{"type": "mcp_approval_response", "approval_request_id": requests[0].id, "approve": True}],
)
ran = [item for item in approved.output if item.type == "mcp_call"]
assert ran and ran[0].approval_request_id == requests[0].id, approved.output
assert not any(item.type == "mcp_list_tools" for item in approved.output), "listed once per conversation"
print("approved:", [item.type for item in approved.output], flush=True)

for bad in [dict(FS, server_url="http://127.0.0.1:1/mcp"), dict(FS, server_label="nope")]:
    try:
        client.responses.create(model=MODEL, input="hi", tools=[bad])
        raise AssertionError(f"accepted {bad}")
    except openai.BadRequestError as e:
        assert e.body["param"].startswith("tools[0]"), e.body

# The Agents SDK with our /mcp as its MCP server, in its Responses mode.
from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, set_tracing_disabled  # noqa: E402
from agents.mcp import MCPServerStreamableHttp, create_static_tool_filter  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402

set_tracing_disabled(True)


async def agent_with_mcp():
    # One tool offered: every schema of the filesystem server would make a prompt of thousands of tokens.
    only_listing = create_static_tool_filter(allowed_tool_names=["fs__list_directory"])
    async with MCPServerStreamableHttp(params={"url": os.environ["MCP_URL"]}, name="runner",
                                       cache_tools_list=True, tool_filter=only_listing) as server:
        tools = await server.list_tools()
        assert [t.name for t in tools] == ["fs__list_directory"], [t.name for t in tools]
        agent = Agent(
            name="files",
            instructions="Use the tools to answer. Be brief.",
            mcp_servers=[server],
            model=OpenAIResponsesModel(model=MODEL, openai_client=AsyncOpenAI(base_url=os.environ["BASE_URL"],
                                                                              api_key="unused")),
            model_settings=ModelSettings(tool_choice="fs__list_directory", temperature=0, max_tokens=200,
                                         parallel_tool_calls=False),
            # The tool's output is the answer: the 135M model's own summary of a listing runs past any bound.
            tool_use_behavior="stop_on_first_tool",
        )
        result = await Runner.run(agent, f"List the files in {FILES_DIR}", max_turns=3)
        outputs = [str(item.output) for item in result.new_items if item.type == "tool_call_output_item"]
        assert outputs, [item.type for item in result.new_items]
        assert result.final_output, result
        print("agent with mcp ->", outputs[0][:80].replace("\n", " "))


asyncio.run(agent_with_mcp())
print("responses mcp ok")
