"""A small MCP Registry API client written to the registry's v0.1 spec (standard library only): pages
through GET /v0.1/servers with `limit` and `metadata.nextCursor`, searches, and reads one server's
latest version by its URL-encoded name. Env: REGISTRY_URL, API_KEY (optional). Prints the names found
and `registry client ok`."""
import json
import os
import urllib.error
import urllib.parse
import urllib.request

BASE = os.environ["REGISTRY_URL"].rstrip("/")


def get(path, **query):
    url = BASE + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if os.environ.get("API_KEY"):
        request.add_header("Authorization", "Bearer " + os.environ["API_KEY"])
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers.get_content_type() == "application/json"
        return json.load(response)


def check_server(server):
    # server.json's required fields.
    for field in ("name", "description", "version"):
        assert isinstance(server.get(field), str), (field, server)
    for package in server.get("packages", []):
        assert package["registryType"] in ("npm", "pypi", "oci", "nuget", "mcpb"), package
        assert package["transport"]["type"] in ("stdio", "streamable-http", "sse"), package
        for var in package.get("environmentVariables", []):
            assert isinstance(var["name"], str)
    for remote in server.get("remotes", []):
        assert remote["type"] in ("streamable-http", "sse") and remote["url"].startswith("http")


names, cursor, pages = [], None, 0
while pages < 50:
    query = {"limit": 2}
    if cursor:
        query["cursor"] = cursor
    body = get("/v0.1/servers", **query)
    pages += 1
    assert body["metadata"]["count"] == len(body["servers"]) <= 2, body["metadata"]
    for item in body["servers"]:
        check_server(item["server"])
        assert isinstance(item.get("_meta", {}), dict)
        names.append(item["server"]["name"])
    cursor = body["metadata"].get("nextCursor")
    if not cursor:
        break
assert pages >= 2, "expected more than one page of 2"
assert len(names) == len(set(names)), names

found = get("/v0.1/servers", search="time")
assert "io.github.modelcontextprotocol/server-time" in [s["server"]["name"] for s in found["servers"]]

name = "io.github.modelcontextprotocol/server-everything"
latest = get("/v0.1/servers/" + urllib.parse.quote(name, safe="") + "/versions/latest")
check_server(latest["server"])
assert latest["server"]["name"] == name
installed = latest["_meta"]["dev.model-runner/catalog"]["installed"]
print("installed:", json.dumps(installed))

# Hostile values: limits that are not whole numbers in range are 400s; odd cursors and searches page
# nothing rather than fail; unknown or traversing names are 404s.
for limit in (0, -1, "abc", "1e3", "99999999999999999999999", ""):
    try:
        get("/v0.1/servers", limit=limit)
        raise AssertionError(f"limit={limit!r} was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 400, (limit, e.code)
for query in ({"cursor": "\uffff" * 64}, {"search": "x" * 10000}, {"search": "%00'\";<script>"}):
    body = get("/v0.1/servers", **query)
    assert body["servers"] == [] and body["metadata"]["count"] == 0, (query, body["metadata"])
for path in ("/v0.1/servers/" + urllib.parse.quote("../../etc/passwd", safe="") + "/versions/latest",
             "/v0.1/servers/" + urllib.parse.quote(name, safe="") + "/versions/0.0.0-none"):
    try:
        get(path)
        raise AssertionError(f"{path} was found")
    except urllib.error.HTTPError as e:
        assert e.code == 404, (path, e.code)

print("names:", json.dumps(names))
print("registry client ok")
