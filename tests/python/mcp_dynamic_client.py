"""Dynamic MCP through the gateway's /mcp with the official MCP Python SDK: `mcp_add` starts a catalog
server for the session (its tools appear, `notifications/tools/list_changed` arrives), other sessions do
not see it, `mcp_remove` stops it; refusals for a gateway with the switch off, a server the client may not
use, and a catalog server whose secrets are not set. Env: MCP_URL, MODE (`on` or `off`), TOKEN (a client
allowed `everything` and `github`), NARROW_TOKEN (a client allowed only `time`), GATEWAY_PID. Prints
"dynamic client ok"."""
import asyncio
import os

import mcp.types as types
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

URL = os.environ["MCP_URL"]
MODE = os.environ["MODE"]
TOKEN = os.environ["TOKEN"]
NARROW_TOKEN = os.environ["NARROW_TOKEN"]
GATEWAY_PID = int(os.environ["GATEWAY_PID"])


def gateway_children_running(needle):
    """How many processes below the gateway have `needle` in their command line."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    count = 0
    for pid in parent:
        at = pid
        for _ in range(len(parent)):
            at = parent.get(at, 0)
            if at == GATEWAY_PID:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        count += needle.encode() in f.read()
                except OSError:
                    pass
                break
            if at <= 1:
                break
    return count


def text(result):
    return "\n".join(c.text for c in result.content if getattr(c, "text", None) is not None)


async def tool_names(session):
    return {t.name for t in (await session.list_tools()).tools}


async def connect(token, body, on_message=None):
    headers = {"Authorization": f"Bearer {token}"}
    async with streamablehttp_client(URL, headers=headers) as (read, write, _):
        async with ClientSession(read, write, message_handler=on_message) as session:
            await session.initialize()
            return await body(session)


async def switched_off(session):
    names = await tool_names(session)
    assert "mcp_add" not in names and "mcp_remove" not in names, sorted(names)
    r = await session.call_tool("mcp_add", {"name": "everything"})
    assert r.isError and "dynamicServers" in text(r), text(r)
    assert not any(n.startswith("everything__") for n in await tool_names(session))


async def switched_on():
    changed = asyncio.Event()

    async def on_message(message):
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ToolListChangedNotification
        ):
            changed.set()

    async def adder(session):
        names = await tool_names(session)
        assert {"mcp_add", "mcp_remove"} <= names, sorted(names)
        assert "everything__echo" not in names, sorted(names)

        changed.clear()
        r = await session.call_tool("mcp_add", {"name": "everything"})
        assert not r.isError, text(r)
        assert r.structuredContent["server"] == "everything", r.structuredContent
        assert "everything__echo" in r.structuredContent["tools"], r.structuredContent
        await asyncio.wait_for(changed.wait(), 30)
        names = await tool_names(session)
        assert "everything__echo" in names and "everything__get-sum" in names, sorted(names)

        r = await session.call_tool("everything__echo", {"message": "added at run time"})
        assert not r.isError and text(r) == "Echo: added at run time", text(r)
        # Its tools are checked as configured servers' are.
        r = await session.call_tool("everything__get-sum", {"a": 2, "b": "three"})
        assert r.isError and "/b" in text(r), text(r)

        # Another session of the same client sees none of it.
        async def other(session):
            assert "everything__echo" not in await tool_names(session)
            r = await session.call_tool("everything__echo", {"message": "x"})
            assert r.isError, text(r)

        await connect(TOKEN, other)

        r = await session.call_tool("mcp_add", {"name": "everything"})
        assert r.isError and "already" in text(r), text(r)
        # Secrets it needs that are not set: refused, naming them; nothing is connected to.
        r = await session.call_tool("mcp_add", {"name": "github"})
        assert r.isError and "GITHUB_TOKEN" in text(r), text(r)
        # Only catalog entries.
        r = await session.call_tool("mcp_add", {"name": "no-such-server-anywhere"})
        assert r.isError and "no catalog entry" in text(r), text(r)

        changed.clear()
        r = await session.call_tool("mcp_remove", {"name": "everything"})
        assert not r.isError, text(r)
        await asyncio.wait_for(changed.wait(), 30)
        assert not any(n.startswith("everything__") for n in await tool_names(session))
        for _ in range(100):
            if gateway_children_running("server-everything") == 0:
                break
            await asyncio.sleep(0.1)
        assert gateway_children_running("server-everything") == 0, "mcp_remove stopped it"
        r = await session.call_tool("everything__echo", {"message": "gone"})
        assert r.isError, text(r)
        r = await session.call_tool("mcp_remove", {"name": "everything"})
        assert r.isError, text(r)

        # Added again, and left running: the session's end stops it (the test checks after).
        r = await session.call_tool("mcp_add", {"name": "everything"})
        assert not r.isError, text(r)
        assert gateway_children_running("server-everything") > 0

    await connect(TOKEN, adder, on_message)

    async def narrow(session):
        r = await session.call_tool("mcp_add", {"name": "everything"})
        assert r.isError and "may not" in text(r), text(r)

    await connect(NARROW_TOKEN, narrow)


async def main():
    if MODE == "off":
        await connect(TOKEN, switched_off)
    else:
        await switched_on()
    print("dynamic client ok")


asyncio.run(main())
