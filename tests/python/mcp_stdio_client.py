"""The Python MCP SDK launching `model mcp` over stdio, as desktop clients do. Env: MODEL_BIN, CONFIG,
MODEL_RUNNER_HOME, MODEL."""
import asyncio
import os

from mcp import StdioServerParameters
from mcp_stdio import stdio_session


async def main():
    params = StdioServerParameters(
        command=os.environ["MODEL_BIN"],
        args=["mcp", "--mcp-config", os.environ["CONFIG"]],
        env=dict(os.environ),
    )
    async with stdio_session(params) as session:
        init = await session.initialize()
        assert init.serverInfo.name == "model-runner"
        names = {t.name for t in (await session.list_tools()).tools}
        assert {"everything__echo", "mcp_find", "chat", "list_models"} <= names, names
        r = await session.call_tool("everything__echo", {"message": "over stdio"})
        assert not r.isError and r.content[0].text == "Echo: over stdio", r
        assert init.capabilities.resources and init.capabilities.prompts, init.capabilities
        doc = "model-runner://everything/demo://resource/static/document/features.md"
        uris = {str(r.uri) for r in (await session.list_resources()).resources}
        assert doc in uris, uris
        r = await session.read_resource(doc)
        assert str(r.contents[0].uri) == doc and r.contents[0].text, r
        prompts = {p.name for p in (await session.list_prompts()).prompts}
        assert "everything__simple-prompt" in prompts, prompts
        r = await session.get_prompt("everything__simple-prompt")
        assert r.messages and r.messages[0].content.text, r
        r = await session.call_tool("list_models", {})
        assert os.environ["MODEL"] in r.structuredContent["models"], r.structuredContent
    print("stdio client ok")


asyncio.run(main())
