"""Resources, resource templates, prompts and resource subscriptions of server-everything through the
gateway's /mcp, with the official MCP Python SDK. Env: MCP_URL; READER_TOKEN (a client allowed the
server `everything`), OUTSIDER_TOKEN (a client allowed only `time`). Prints "resources client ok"."""
import asyncio
import base64
import os

import mcp.types as types
from mcp import ClientSession, McpError
from mcp.client.streamable_http import streamablehttp_client

URL = os.environ["MCP_URL"]
PREFIX = "model-runner://everything/"
DOC = PREFIX + "demo://resource/static/document/architecture.md"


async def connect(token, body, on_message=None):
    headers = {"Authorization": f"Bearer {token}"}
    async with streamablehttp_client(URL, headers=headers) as (read, write, _):
        async with ClientSession(read, write, message_handler=on_message) as session:
            init = await session.initialize()
            await body(session, init.capabilities)


async def expect_error(what, request):
    try:
        await request
    except McpError as e:
        return e.error
    raise AssertionError(f"{what} should have failed")


async def reader(session, capabilities):
    assert capabilities.resources is not None and capabilities.resources.subscribe, capabilities
    assert capabilities.prompts is not None, capabilities

    resources = (await session.list_resources()).resources
    uris = [str(r.uri) for r in resources]
    assert uris and all(u.startswith(PREFIX) for u in uris), uris
    assert DOC in uris, uris
    text = (await session.read_resource(DOC)).contents
    assert len(text) == 1 and isinstance(text[0], types.TextResourceContents), text
    assert str(text[0].uri) == DOC and text[0].mimeType == "text/markdown", text[0]
    assert len(text[0].text) > 100, text[0].text

    templates = (await session.list_resource_templates()).resourceTemplates
    by_name = {t.name: t.uriTemplate for t in templates}
    blob_template = by_name.get("Dynamic Blob Resource")
    assert blob_template == PREFIX + "demo://resource/dynamic/blob/{resourceId}", by_name
    blob_uri = blob_template.replace("{resourceId}", "3")
    blob = (await session.read_resource(blob_uri)).contents
    assert isinstance(blob[0], types.BlobResourceContents), blob
    assert str(blob[0].uri) == blob_uri and base64.b64decode(blob[0].blob), blob[0]

    prompts = {p.name: p for p in (await session.list_prompts()).prompts}
    assert "everything__args-prompt" in prompts, list(prompts)
    args = {a.name for a in prompts["everything__args-prompt"].arguments or []}
    assert args == {"city", "state"}, args
    got = await session.get_prompt("everything__args-prompt", {"city": "Lisbon", "state": "Lisboa"})
    said = " ".join(m.content.text for m in got.messages if m.content.type == "text")
    assert "Lisbon" in said, said
    embedded = await session.get_prompt(
        "everything__resource-prompt", {"resourceType": "Text", "resourceId": "2"}
    )
    links = [m.content.resource for m in embedded.messages if m.content.type == "resource"]
    assert links and all(str(r.uri).startswith(PREFIX) for r in links), embedded.messages

    for uri in ["demo://resource/static/document/architecture.md", "model-runner://nobody/x:1"]:
        error = await expect_error(f"reading {uri}", session.read_resource(uri))
        assert "no MCP resource" in error.message, error
    error = await expect_error("an unknown prompt", session.get_prompt("everything__nope"))
    assert "no MCP prompt" in error.message, error


async def subscriber():
    updated = asyncio.Event()
    seen = []

    async def on_message(message):
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ResourceUpdatedNotification
        ):
            seen.append(str(message.root.params.uri))
            if str(message.root.params.uri) == DOC:
                updated.set()

    async def body(session, _capabilities):
        await session.subscribe_resource(DOC)
        started = await session.call_tool("everything__toggle-subscriber-updates", {})
        assert not started.isError, started
        try:
            await asyncio.wait_for(updated.wait(), 15)
        finally:
            await session.call_tool("everything__toggle-subscriber-updates", {})
        await session.unsubscribe_resource(DOC)

    await connect(os.environ["READER_TOKEN"], body, on_message)
    assert DOC in seen, seen


async def outsider(session, _capabilities):
    assert (await session.list_resources()).resources == []
    assert (await session.list_resource_templates()).resourceTemplates == []
    assert (await session.list_prompts()).prompts == []
    error = await expect_error("reading another client's resource", session.read_resource(DOC))
    assert "may not" in error.message, error
    error = await expect_error(
        "another client's prompt", session.get_prompt("everything__args-prompt", {"city": "x"})
    )
    assert "may not" in error.message, error


async def outsider_knows_nothing_is_offered(_session, capabilities):
    assert capabilities.resources is None and capabilities.prompts is None, capabilities


async def main():
    await connect(os.environ["READER_TOKEN"], reader)
    await subscriber()
    await connect(os.environ["OUTSIDER_TOKEN"], outsider)
    # Its server has run by now and offers neither: a new session is not offered them.
    await connect(os.environ["OUTSIDER_TOKEN"], outsider_knows_nothing_is_offered)
    print("resources client ok")


asyncio.run(main())
