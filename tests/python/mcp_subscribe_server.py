"""A stdio MCP server on the Python SDK's low-level `Server` whose resources can be subscribed to: two
notes (`note://a`, `note://b`) and a tool `touch(uri)` that changes a note and sends
`notifications/resources/updated` for it when some client subscribed to it (the server keeps the set of
subscribed URIs, as the spec lets it). With `--no-subscribe` it serves the same notes without the
subscribe capability. Run as `mcp_subscribe_server.py [--no-subscribe]`."""
import sys

import anyio
import mcp.types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

SUBSCRIBE = "--no-subscribe" not in sys.argv
NOTES = {"note://a": "first version of a", "note://b": "first version of b"}
subscribed: set[str] = set()


async def list_resources(_ctx, _params) -> types.ListResourcesResult:
    return types.ListResourcesResult(
        resources=[types.Resource(uri=uri, name=uri[7:], mimeType="text/plain") for uri in NOTES]
    )


async def read_resource(_ctx, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
    uri = str(params.uri)
    return types.ReadResourceResult(
        contents=[types.TextResourceContents(uri=uri, mimeType="text/plain", text=NOTES[uri])]
    )


async def subscribe(_ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
    subscribed.add(str(params.uri))
    return types.EmptyResult()


async def unsubscribe(_ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    subscribed.discard(str(params.uri))
    return types.EmptyResult()


async def list_tools(_ctx, _params) -> types.ListToolsResult:
    schema = {"type": "object", "properties": {"uri": {"type": "string"}}, "required": ["uri"]}
    return types.ListToolsResult(
        tools=[types.Tool(name="touch", description="Changes a note.", inputSchema=schema)]
    )


async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
    uri = str((params.arguments or {}).get("uri", ""))
    if uri not in NOTES:
        return types.CallToolResult(content=[types.TextContent(type="text", text="no such note")], isError=True)
    NOTES[uri] = NOTES[uri].replace("first", "next")
    notified = uri in subscribed
    if notified:
        await ctx.session.send_resource_updated(uri)
    text = f"touched {uri}" + (" (subscribers notified)" if notified else "")
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


handlers = dict(
    on_list_resources=list_resources,
    on_read_resource=read_resource,
    on_list_tools=list_tools,
    on_call_tool=call_tool,
)
if SUBSCRIBE:
    handlers.update(on_subscribe_resource=subscribe, on_unsubscribe_resource=unsubscribe)
server = Server("notes", **handlers)


async def main() -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


anyio.run(main)
