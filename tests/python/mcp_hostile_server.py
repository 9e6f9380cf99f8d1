"""A hostile stdio MCP server, written without an SDK so it can break the protocol on purpose: its
resource list never stops paging and carries a URI with a control character, one read answers a
malformed result, another and its one prompt answer 9 MiB. The gateway must cut, refuse and report, and
keep serving."""
import json
import sys

HUGE = "y" * (9 * 1024 * 1024)


def answer(request):
    method, params = request["method"], request.get("params") or {}
    if method == "initialize":
        return {"protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}, "resources": {}, "prompts": {}},
                "serverInfo": {"name": "hostile", "version": "1"}}
    if method == "tools/list":
        return {"tools": []}
    if method == "prompts/list":
        return {"prompts": [{"name": "huge"}]}
    if method == "prompts/get":
        return {"messages": [{"role": "user", "content": {"type": "text", "text": HUGE}}]}
    if method == "resources/templates/list":
        return {"resourceTemplates": []}
    if method == "resources/list":
        page = int((params.get("cursor") or "c0")[1:])
        resources = [{"uri": f"loop://{page}", "name": f"page {page}"}]
        if page == 0:
            resources.append({"uri": "bad://x\u0007y", "name": "bell"})
        return {"resources": resources, "nextCursor": f"c{page + 1}"}
    if method == "resources/read":
        uri = params["uri"]
        if uri == "loop://1":
            return {"contents": "not a list"}
        if uri == "loop://2":
            return {"contents": [{"uri": uri, "text": HUGE}]}
        return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": "fine"}]}
    return None


for line in sys.stdin:
    request = json.loads(line)
    if "id" not in request:
        continue
    result = answer(request)
    if result is None:
        reply = {"jsonrpc": "2.0", "id": request["id"],
                 "error": {"code": -32601, "message": "method not found"}}
    else:
        reply = {"jsonrpc": "2.0", "id": request["id"], "result": result}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
