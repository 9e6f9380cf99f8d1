"""The Python MCP SDK against the features server (mcp_features_server.py) through the gateway: a tool
that elicits input reaches this client's elicitation callback (accepted, then declined), and a client
that declared no elicitation gets an error result; a tool result's resource link and embedded resource
come back under the gateway's URIs (the over-long link left out) and the link reads back through the
gateway. Env: SERVER (the features server's name in the gateway's config); MCP_URL for /mcp, else
MODEL_BIN and CONFIG (and MODEL_RUNNER_HOME) for `model mcp` over stdio. Prints "features client ok"."""
import asyncio
import contextlib
import os

import mcp.types as types
from mcp import ClientSession, StdioServerParameters
from mcp.client.streamable_http import streamablehttp_client
from mcp_stdio import stdio_session

SERVER = os.environ["SERVER"]
PREFIX = f"model-runner://{SERVER}/"


@contextlib.asynccontextmanager
async def connect(**callbacks):
    if "MCP_URL" in os.environ:
        async with streamablehttp_client(os.environ["MCP_URL"]) as (read, write, _):
            async with ClientSession(read, write, **callbacks) as session:
                await session.initialize()
                yield session
    else:
        params = StdioServerParameters(
            command=os.environ["MODEL_BIN"],
            args=["mcp", "--mcp-config", os.environ["CONFIG"]],
            env=dict(os.environ),
        )
        async with stdio_session(params, **callbacks) as session:
            await session.initialize()
            yield session


def text(result):
    return "\n".join(c.text for c in result.content if c.type == "text")


async def main():
    asked = []

    async def accept(context, params):
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"color": "teal"})

    async def decline(context, params):
        return types.ElicitResult(action="decline")

    async with connect(elicitation_callback=accept) as session:
        r = await session.call_tool(f"{SERVER}__pick_color", {})
        assert not r.isError and text(r) == "accepted: teal", r
        assert asked == ["Which color do you like?"], asked

        r = await session.call_tool(f"{SERVER}__links", {})
        assert not r.isError, r
        links = [c for c in r.content if c.type == "resource_link"]
        embedded = [c for c in r.content if c.type == "resource"]
        assert [str(link.uri) for link in links] == [PREFIX + "memo://notes/first"], links
        assert [str(e.resource.uri) for e in embedded] == [PREFIX + "memo://notes/second"], embedded
        assert embedded[0].resource.text == "the second note", embedded
        read = await session.read_resource(links[0].uri)
        assert read.contents[0].text == "the first note", read
        assert str(read.contents[0].uri) == PREFIX + "memo://notes/first", read

    async with connect(elicitation_callback=decline) as session:
        r = await session.call_tool(f"{SERVER}__pick_color", {})
        assert text(r) == "action: decline", r

    async with connect() as session:
        r = await session.call_tool(f"{SERVER}__pick_color", {})
        assert r.isError and "elicitation" in text(r), r
    print("features client ok")


asyncio.run(main())
