"""Reads the `model-runner` entry that `model mcp client connect` wrote into a client's own config file,
checks it against the shape the client documents, and connects to the gateway exactly as that client
would: launching the stdio command with its args and env, or posting to the URL with its headers.
Env: CLIENT (claude-desktop | vscode | codex), CLIENT_CONFIG (the file); for Codex over HTTP, the
variable its entry names holds the token. Prints `client config ok`."""
import asyncio
import json
import os
import tomllib

from mcp import ClientSession, StdioServerParameters
from mcp.client.streamable_http import streamablehttp_client
from mcp_stdio import stdio_session

client = os.environ["CLIENT"]
if client == "codex":
    with open(os.environ["CLIENT_CONFIG"], "rb") as f:
        document = tomllib.load(f)
else:
    with open(os.environ["CLIENT_CONFIG"]) as f:
        document = json.load(f)

if client == "codex":
    # Codex (codex-rs RawMcpServerConfig, unknown keys refused): [mcp_servers.NAME] with stdio's
    # command, args?, env?, env_vars?, cwd?, or streamable HTTP's url, bearer_token_env_var?,
    # http_headers?, env_http_headers? (an inline bearer_token is refused); shared keys beside them.
    entry = dict(document["mcp_servers"]["model-runner"])
    shared = {"startup_timeout_sec", "startup_timeout_ms", "tool_timeout_sec", "enabled", "required",
              "enabled_tools", "disabled_tools", "scopes", "oauth_resource"}
    if "command" in entry:
        assert set(entry) <= {"command", "args", "env", "env_vars", "cwd"} | shared, entry
    else:
        assert set(entry) <= {"url", "bearer_token_env_var", "http_headers", "env_http_headers"} | shared
        assert "url" in entry and "bearer_token" not in entry, entry
        headers = dict(entry.get("http_headers", {}))
        if "bearer_token_env_var" in entry:
            headers["Authorization"] = f"Bearer {os.environ[entry['bearer_token_env_var']]}"
        entry["headers"] = headers
elif client == "vscode":
    # VS Code: {"servers": {NAME: {"type": "stdio", "command", "args"?, "env"?} |
    #                              {"type": "http" | "sse", "url", "headers"?}}, "inputs"?: [...]}
    entry = document["servers"]["model-runner"]
    assert entry["type"] in ("stdio", "http", "sse"), entry
    allowed = {"stdio": {"type", "command", "args", "env", "envFile", "cwd", "dev"},
               "http": {"type", "url", "headers", "dev"}, "sse": {"type", "url", "headers", "dev"}}
    assert set(entry) <= allowed[entry["type"]], entry
else:
    # Claude Desktop: {"mcpServers": {NAME: {"command", "args"?, "env"?}}}, stdio only.
    entry = document["mcpServers"]["model-runner"]
    assert set(entry) <= {"command", "args", "env"} and "command" in entry, entry
assert all(isinstance(a, str) for a in entry.get("args", []))
assert all(isinstance(v, str) for v in entry.get("env", {}).values())


async def use(session):
    await session.initialize()
    names = {t.name for t in (await session.list_tools()).tools}
    assert "everything__echo" in names, names
    result = await session.call_tool("everything__echo", {"message": client})
    assert not result.isError and client in result.content[0].text, result


async def main():
    if "url" in entry:
        async with streamablehttp_client(entry["url"], headers=entry.get("headers")) as (read, write, _):
            async with ClientSession(read, write) as session:
                await use(session)
    else:
        params = StdioServerParameters(command=entry["command"], args=entry.get("args", []),
                                       env=entry.get("env"))
        async with stdio_session(params) as session:
            await use(session)
    print("client config ok")


asyncio.run(main())
