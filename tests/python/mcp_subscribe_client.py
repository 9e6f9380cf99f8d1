"""Resource subscriptions through the gateway's /mcp with the official MCP Python SDK (1.x, MCP_PYTHON), against
mcp_subscribe_server.py (`notes`, which offers subscriptions, and `plain`, the same server without
them). Env: MCP_URL; TOKEN (a client allowed both servers), PLAIN_TOKEN (a client allowed only
`plain`). Prints "subscribe client ok"."""
import asyncio
import os
import warnings
from contextlib import AsyncExitStack

import mcp.types as types
from mcp import ClientSession, McpError
from mcp.client.streamable_http import streamablehttp_client

URL = os.environ["MCP_URL"]
NOTE_A = "model-runner://notes/note://a"
NOTE_B = "model-runner://notes/note://b"
PLAIN_A = "model-runner://plain/note://a"
# The SDK marks resources/subscribe deprecated for the 2026-07-28 protocol; the gateway speaks an
# earlier one, where it is the way to follow a resource.
warnings.filterwarnings("ignore", message="resources/subscribe")


class Recorder:
    """The resources/updated notifications one session received."""

    def __init__(self):
        self.uris = []
        self.event = asyncio.Event()

    async def __call__(self, message):
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ResourceUpdatedNotification
        ):
            self.uris.append(str(message.root.params.uri))
            self.event.set()

    async def next_update(self, within):
        try:
            await asyncio.wait_for(self.event.wait(), within)
        except asyncio.TimeoutError:
            return None
        self.event.clear()
        return self.uris[-1]


async def open_session(stack, token, recorder=None):
    headers = {"Authorization": f"Bearer {token}"}
    read, write, _ = await stack.enter_async_context(streamablehttp_client(URL, headers=headers))
    session = await stack.enter_async_context(ClientSession(read, write, message_handler=recorder))
    init = await session.initialize()
    return session, init.capabilities


async def expect_error(what, request):
    try:
        await request
    except McpError as e:
        return e.error.message
    raise AssertionError(f"{what} should have failed")


def text(result):
    return " ".join(c.text for c in result.content if c.type == "text")


async def subscribed_and_unsubscribed_sessions():
    async with AsyncExitStack() as stack:
        follower_updates, bystander_updates = Recorder(), Recorder()
        follower, capabilities = await open_session(stack, os.environ["TOKEN"], follower_updates)
        bystander, _ = await open_session(stack, os.environ["TOKEN"], bystander_updates)
        assert capabilities.resources is not None and capabilities.resources.subscribe, capabilities
        uris = {str(r.uri) for r in (await follower.list_resources()).resources}
        assert {NOTE_A, NOTE_B, PLAIN_A} <= uris, uris

        await follower.subscribe_resource(NOTE_A)
        touched = await bystander.call_tool("notes__touch", {"uri": "note://a"})
        assert "subscribers notified" in text(touched), touched
        assert await follower_updates.next_update(10) == NOTE_A, follower_updates.uris
        read = (await follower.read_resource(NOTE_A)).contents
        assert read[0].text == "next version of a", read

        # A resource nobody follows changes: no one hears of it.
        touched = await follower.call_tool("notes__touch", {"uri": "note://b"})
        assert "subscribers notified" not in text(touched), touched
        await asyncio.sleep(1.0)
        assert follower_updates.uris == [NOTE_A], follower_updates.uris
        assert bystander_updates.uris == [], bystander_updates.uris

        # Unsubscribed (the last follower), the server is told, and no update comes any more.
        await follower.unsubscribe_resource(NOTE_A)
        touched = await bystander.call_tool("notes__touch", {"uri": "note://a"})
        assert "subscribers notified" not in text(touched), touched
        assert await follower_updates.next_update(1.0) is None, follower_updates.uris

        # A server that does not offer subscriptions refuses them with a clear error.
        error = await expect_error("subscribing to plain", follower.subscribe_resource(PLAIN_A))
        assert "does not offer resource subscriptions" in error, error
        assert bystander_updates.uris == [], bystander_updates.uris


async def plain_client():
    async with AsyncExitStack() as stack:
        session, _ = await open_session(stack, os.environ["PLAIN_TOKEN"])
        uris = {str(r.uri) for r in (await session.list_resources()).resources}
        assert uris == {"model-runner://plain/note://a", "model-runner://plain/note://b"}, uris
        error = await expect_error("subscribing to another client's server", session.subscribe_resource(NOTE_A))
        assert "may not" in error, error
    async with AsyncExitStack() as stack:
        # Its only server has run by now and offers no subscriptions: a new session is not offered them.
        _, capabilities = await open_session(stack, os.environ["PLAIN_TOKEN"])
        assert capabilities.resources is not None and not capabilities.resources.subscribe, capabilities


async def main():
    await subscribed_and_unsubscribed_sessions()
    await plain_client()
    print("subscribe client ok")


asyncio.run(main())
