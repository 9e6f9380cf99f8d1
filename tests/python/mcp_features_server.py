"""An MCP server (the Python MCP SDK's FastMCP) with the features the gateway relays beyond plain tools:
a tool that elicits input from the user, a tool whose result links and embeds resources (one link with
a URI too long to relay), a resource to read back, and a tool that asks the client to sample with
temperature, stop sequences and a token limit. Run as `mcp_features_server.py [stdio|sse|streamable-http]
[PORT]`."""
import json
import sys

from pydantic import BaseModel

import mcp.types as types
from mcp.server.fastmcp import Context, FastMCP

TRANSPORT = sys.argv[1] if len(sys.argv) > 1 else "stdio"
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 8000

mcp = FastMCP("features", host="127.0.0.1", port=PORT)


class Color(BaseModel):
    color: str


@mcp.tool()
def echo(text: str) -> str:
    """Echo the text back."""
    return f"echo: {text}"


@mcp.tool()
async def pick_color(ctx: Context) -> str:
    """Ask the user for a color."""
    result = await ctx.elicit(message="Which color do you like?", schema=Color)
    if result.action == "accept":
        return f"accepted: {result.data.color}"
    return f"action: {result.action}"


@mcp.resource("memo://notes/first", mime_type="text/plain")
def first_note() -> str:
    return "the first note"


@mcp.tool()
def links() -> list[types.ContentBlock]:
    """Notes, linked and embedded."""
    return [
        types.TextContent(type="text", text="see the notes"),
        types.ResourceLink(type="resource_link", uri="memo://notes/first", name="first"),
        types.EmbeddedResource(
            type="resource",
            resource=types.TextResourceContents(
                uri="memo://notes/second", text="the second note", mimeType="text/plain"
            ),
        ),
        types.ResourceLink(type="resource_link", uri="memo://notes/" + "x" * 9000, name="too long"),
    ]


@mcp.tool()
async def sample(
    prompt: str,
    ctx: Context,
    max_tokens: int = 1000,
    temperature: float | None = None,
    stop: list[str] | None = None,
) -> str:
    """Ask the client's model."""
    result = await ctx.session.create_message(
        messages=[
            types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))
        ],
        max_tokens=max_tokens,
        temperature=temperature,
        stop_sequences=stop,
    )
    return json.dumps(
        {"text": result.content.text, "model": result.model, "stopReason": result.stopReason}
    )


if __name__ == "__main__":
    mcp.run(transport=TRANSPORT)
