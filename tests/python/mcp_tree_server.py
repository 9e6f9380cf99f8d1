"""A small stdio MCP server (the Python MCP SDK's FastMCP) whose tool takes a recursive argument: a tree
node whose children are nodes, so its input schema refers to itself (`#/$defs/Node`). The gateway must
list it, check arguments against it and call it."""
from __future__ import annotations

from pydantic import BaseModel

from mcp.server.fastmcp import FastMCP

mcp = FastMCP("tree")


class Node(BaseModel):
    name: str
    children: list[Node] = []


@mcp.tool()
def count_nodes(root: Node) -> str:
    """Count the nodes of a tree."""

    def count(node: Node) -> int:
        return 1 + sum(count(child) for child in node.children)

    return f"{count(root)} nodes"


if __name__ == "__main__":
    mcp.run()
