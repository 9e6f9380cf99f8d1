"""The Python MCP SDK as a client of the gateway's /mcp: namespaced tools of real servers (stdio, a fake
`docker run -i`, and one behind mcp-proxy over streamable HTTP), argument checks, credential injection,
discovery, and the runner's own tools. Env: MCP_URL, FILES_DIR, SECRET, MODEL."""
import asyncio
import os
import re

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

URL = os.environ["MCP_URL"]
FILES_DIR = os.environ["FILES_DIR"]
SECRET = os.environ["SECRET"]
MODEL = os.environ["MODEL"]


def text(result):
    return "\n".join(c.text for c in result.content if getattr(c, "text", None) is not None)


async def main():
    async with streamable_http_client(URL) as (read, write, _):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            assert init.serverInfo.name == "model-runner", init.serverInfo
            assert init.capabilities.tools is not None
            tools = {t.name: t for t in (await session.list_tools()).tools}
            for name in tools:
                assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name), name
                assert tools[name].description, f"{name} has no description"
            for expected in ["everything__echo", "everything__get-sum", "fs__list_directory",
                             "time__get_current_time", "proxied__echo", "docker_time__get_current_time",
                             "mcp_find", "mcp_call", "chat", "list_models"]:
                assert expected in tools, f"{expected} missing from {sorted(tools)}"
            assert "fs__write_file" not in tools, "fs offers only the tools its config enables"

            r = await session.call_tool("everything__echo", {"message": "hello gateway"})
            assert not r.isError and text(r) == "Echo: hello gateway", r

            r = await session.call_tool("everything__get-sum", {"a": 2, "b": 3})
            assert not r.isError and "5" in text(r), r

            r = await session.call_tool("everything__get-sum", {"a": 2, "b": "three"})
            assert r.isError and "/b" in text(r) and "number" in text(r), r

            r = await session.call_tool("everything__get-sum", {"a": 2})
            assert r.isError and "b" in text(r), r

            r = await session.call_tool("fs__list_directory", {"path": FILES_DIR})
            assert not r.isError and "alpha.txt" in text(r) and "beta.md" in text(r), r

            r = await session.call_tool("fs__list_directory", {"path": "/etc"})
            assert r.isError, "the filesystem server refuses paths outside its root"

            r = await session.call_tool("time__get_current_time", {"timezone": "Asia/Tokyo"})
            assert not r.isError and "Asia/Tokyo" in text(r), r

            r = await session.call_tool("docker_time__get_current_time", {"timezone": "Europe/Paris"})
            assert not r.isError and "Europe/Paris" in text(r), r

            r = await session.call_tool("proxied__echo", {"message": "over http"})
            assert not r.isError and text(r) == "Echo: over http", r

            # Credential injection: the secret reaches the server's environment (and never the log).
            r = await session.call_tool("everything__get-env", {})
            assert not r.isError and SECRET in text(r), "the secret is in the server's env"
            r = await session.call_tool("everything__echo", {"message": f"token {SECRET}"})
            assert not r.isError and SECRET in text(r)

            r = await session.call_tool("mcp_find", {"query": "sum of two numbers", "limit": 3})
            found = [t["name"] for t in r.structuredContent["tools"]]
            assert found and found[0] == "everything__get-sum", found
            r = await session.call_tool("mcp_find", {"query": "list directory"})
            assert r.structuredContent["tools"][0]["name"].startswith("fs__list_directory"), r.structuredContent

            r = await session.call_tool("mcp_call", {"name": "everything__echo", "arguments": {"message": "via mcp_call"}})
            assert not r.isError and text(r) == "Echo: via mcp_call", r

            # Code mode: one script chains calls and returns only what matters.
            r = await session.call_tool("run_js", {"script": f"""
                const reply = fs__list_directory({{path: {FILES_DIR!r}}});
                const listing = typeof reply === "string" ? reply : reply.content;
                const sum = tools["everything__get-sum"]({{a: 20, b: 22}});
                console.log("listed", listing.split("\\n").length, "entries");
                ({{files: listing.match(/[a-z]+\\.(txt|md)/g), sum}})
            """})
            assert not r.isError, r
            out = r.structuredContent
            assert sorted(out["result"]["files"]) == ["alpha.txt", "beta.md"], out
            assert "42" in out["result"]["sum"] and out["logs"].startswith("listed"), out
            r = await session.call_tool("run_js", {"script": "fs__write_file({path: '/tmp/x', content: 'no'})"})
            assert r.isError and "fs__write_file" in text(r), r

            r = await session.call_tool("test_error_handling", {})
            assert r.isError and "test_error_handling" in text(r), r

            r = await session.call_tool("list_models", {})
            assert MODEL in r.structuredContent["models"], r.structuredContent

            r = await session.call_tool("chat", {"model": MODEL, "prompt": "Say hello.", "max_tokens": 8})
            assert not r.isError and text(r).strip(), r

            r = await session.call_tool("chat", {"model": "ai/not-there", "prompt": "hi"})
            assert r.isError, r
    print("gateway client ok")


asyncio.run(main())
