"""The Python MCP SDK's stdio client as the test clients use it: a session on a launched server that
tolerates the one error the SDK raises at a clean exit, and only there.

The SDK's stdio reader catches only ClosedResourceError: a notification the server sends after the
session closed (the gateway's tools/list_changed as an upstream it just started finishes loading)
reaches a broken stream at exit as anyio.BrokenResourceError. That is harmless once the caller's checks
have run; if the stream breaks before they have, the session fails."""
import contextlib

import anyio
from mcp import ClientSession
from mcp.client.stdio import stdio_client


@contextlib.asynccontextmanager
async def stdio_session(params, **callbacks):
    """A ClientSession (not yet initialized) on the server `params` launches; `callbacks` go to it."""
    finished = False
    try:
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write, **callbacks) as session:
                yield session
                finished = True
    except* anyio.BrokenResourceError:
        pass
    assert finished, "the session ended before its checks ran"
