"""The soak's load and its checks, driven by scripts/soak.sh (which starts the registry and the server).

CLIENTS threads mix, until the deadline: streamed and plain chat, streams dropped midway, function tool
calls (tool_choice required), chat with MCP servers (`{"type": "mcp", "server_label": ...}`), direct calls
on /mcp (JSON-RPC over streamable HTTP), pulls from the registry (each followed by a delete, so the next
pull transfers again) and, now and then, an unload (`/api/generate` with keep_alive 0). A sampler records
every 10 s the server's RSS and open fds (/proc), its descendant processes (the MCP servers), and /metrics'
KV blocks. After the load: idle until the MCP servers' idle stop, then the checks. Exit status 1 on a
failed check. Plain urllib and threads; every loop is bounded by the deadline and every request by a timeout.

Env: BASE (http://127.0.0.1:PORT), MODEL, PULL_REFS (space-separated), SERVER_PID, MINUTES, CLIENTS,
MCP_IDLE_SECS, REPORT (a JSON file for the samples and counts).
"""
import http.client
import json
import os
import random
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict

BASE = os.environ["BASE"]
MODEL = os.environ["MODEL"]
PULL_REFS = os.environ["PULL_REFS"].split()
SERVER_PID = int(os.environ["SERVER_PID"])
MINUTES = float(os.environ.get("MINUTES", "20"))
CLIENTS = int(os.environ.get("CLIENTS", "16"))
MCP_IDLE_SECS = float(os.environ.get("MCP_IDLE_SECS", "20"))
REPORT = os.environ.get("REPORT")
SAMPLE_EVERY = 10.0
TIMEOUT = 180.0
# Intended error statuses: 503 is the queue being full (by design, with Retry-After).
ACCEPTED = {200, 503}

WEATHER = {"type": "object", "properties": {"city": {"type": "string"},
                                            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather of a city",
                                           "parameters": WEATHER}}]
PROMPTS = ["Why is the sky blue?", "Name three fruits.", "Say hello in French.", "What is 2 + 2?",
           "Write one sentence about the sea.", "Give me a colour.", "What's the weather in Paris?"]

counts = defaultdict(Counter)  # scenario -> outcome -> count
counts_lock = threading.Lock()
failures = []  # (scenario, outcome, detail), the first few of each kind
deadline = 0.0
unload_gate = threading.Lock()
last_unload = [0.0]


def record(scenario, outcome, detail=""):
    with counts_lock:
        counts[scenario][str(outcome)] += 1
        bad = outcome not in ACCEPTED and outcome not in ("disconnected", "ok")
        if bad and sum(1 for f in failures if f[:2] == (scenario, str(outcome))) < 3:
            failures.append((scenario, str(outcome), detail[:400]))


def request(method, path, body=None, headers=None, timeout=TIMEOUT):
    """(status, headers, body bytes); HTTP errors are statuses, not exceptions."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def chat_body(stream, **extra):
    body = {"model": MODEL, "messages": [{"role": "user", "content": random.choice(PROMPTS)}],
            "max_tokens": random.randint(8, 48), "temperature": 0.7, "seed": random.randint(0, 1 << 30),
            "stream": stream}
    body.update(extra)
    return body


def streamed(scenario, body, drop_after=None):
    """A streamed chat read line by line; `drop_after` lines in, the connection is closed."""
    host, port = BASE.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
        r = conn.getresponse()
        if r.status != 200:
            record(scenario, r.status, r.read().decode(errors="replace"))
            return
        lines = 0
        while True:
            line = r.readline()
            if not line:
                break
            lines += 1
            if line.startswith(b"data: {") and b'"error"' in line[:40]:
                record(scenario, "stream_error", line.decode(errors="replace"))
                return
            if drop_after is not None and lines >= drop_after:
                record(scenario, "disconnected")
                return
            if line.strip() == b"data: [DONE]":
                break
        record(scenario, 200)
    finally:
        conn.close()


def plain(scenario, method, path, body, check=None):
    status, _, data = request(method, path, body)
    if status == 200 and check is not None:
        problem = check(json.loads(data))
        if problem:
            record(scenario, "bad_answer", f"{problem}: {data[:300]!r}")
            return
    record(scenario, status, data.decode(errors="replace"))


def tool_answer(answer):
    choice = answer["choices"][0]
    if choice["finish_reason"] != "tool_calls" or not choice["message"].get("tool_calls"):
        return "tool_choice required but no tool call"
    for call in choice["message"]["tool_calls"]:
        json.loads(call["function"]["arguments"])
    return None


class McpSession:
    """The gateway's /mcp over streamable HTTP: initialize, then JSON-RPC calls; answers may come as SSE."""

    def __init__(self):
        self.session = None
        self.next_id = 1

    def rpc(self, method, params=None, notify=False):
        body = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            body["params"] = params
        if not notify:
            body["id"] = self.next_id
            self.next_id += 1
        headers = {"accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-06-18"}
        if self.session:
            headers["mcp-session-id"] = self.session
        status, h, data = request("POST", "/mcp", body, headers, timeout=60)
        if h is not None and h.get("mcp-session-id"):
            self.session = h.get("mcp-session-id")
        if notify or status != 200:
            return status, None
        text = data.decode(errors="replace")
        for line in text.splitlines():
            if line.startswith("data:") and line[5:].strip().startswith("{"):
                message = json.loads(line[5:])
                if "id" in message:
                    return status, message
        return status, json.loads(text) if text.strip().startswith("{") else None

    def close(self):
        if self.session:
            request("DELETE", "/mcp", None, {"mcp-session-id": self.session}, timeout=30)


def direct_mcp(scenario):
    mcp = McpSession()
    try:
        status, init = mcp.rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                              "clientInfo": {"name": "soak", "version": "1"}})
        if status != 200 or not init or "result" not in init:
            record(scenario, status if status != 200 else "bad_answer", str(init))
            return
        mcp.rpc("notifications/initialized", notify=True)
        status, listed = mcp.rpc("tools/list", {})
        names = [t["name"] for t in (listed or {}).get("result", {}).get("tools", [])]
        if status != 200 or "everything__echo" not in names:
            record(scenario, status if status != 200 else "bad_answer", str(names)[:300])
            return
        call = random.choice([("everything__echo", {"message": "soak"}),
                              ("everything__get-sum", {"a": 2, "b": 3}),
                              ("time__get_current_time", {"timezone": "UTC"})])
        status, result = mcp.rpc("tools/call", {"name": call[0], "arguments": call[1]})
        if status != 200 or not result or "result" not in result or result["result"].get("isError"):
            record(scenario, status if status != 200 else "bad_answer", str(result)[:300])
            return
        record(scenario, 200)
    finally:
        mcp.close()


def pull_and_delete(scenario, ref):
    status, _, data = request("POST", "/api/pull", {"model": ref, "stream": False})
    if status != 200 or json.loads(data).get("status") != "success":
        record(scenario, status if status != 200 else "bad_answer", data.decode(errors="replace"))
        return
    status, _, data = request("DELETE", "/api/delete", {"model": ref})
    record(scenario, status, data.decode(errors="replace"))


def unload(scenario):
    # At most one unload per 30 s across clients: the model is mostly loaded, as in real use.
    with unload_gate:
        if time.time() - last_unload[0] < 30:
            return False
        last_unload[0] = time.time()
    plain(scenario, "POST", "/api/generate", {"model": MODEL, "keep_alive": 0})
    return True


SCENARIOS = [  # (name, weight)
    ("chat", 20), ("chat_stream", 20), ("stream_dropped", 12), ("tool_call", 12), ("mcp_chat", 8),
    ("mcp_direct", 12), ("pull", 8), ("unload", 3),
]


def client(index):
    rng = random.Random(index)
    names, weights = zip(*SCENARIOS)
    while time.time() < deadline:
        scenario = rng.choices(names, weights)[0]
        try:
            if scenario == "chat":
                plain(scenario, "POST", "/v1/chat/completions", chat_body(False),
                      lambda a: None if a["choices"][0]["message"].get("content") is not None else "no content")
            elif scenario == "chat_stream":
                streamed(scenario, chat_body(True, stream_options={"include_usage": True}))
            elif scenario == "stream_dropped":
                streamed(scenario, chat_body(True, max_tokens=64), drop_after=rng.randint(1, 6))
            elif scenario == "tool_call":
                plain(scenario, "POST", "/v1/chat/completions",
                      chat_body(False, tools=TOOLS, tool_choice="required", max_tokens=80), tool_answer)
            elif scenario == "mcp_chat":
                server = rng.choice([("everything", ["echo", "get-sum"]), ("time", ["get_current_time"])])
                body = chat_body(False, tools=[{"type": "mcp", "server_label": server[0], "allowed_tools": server[1]}],
                                 tool_choice="required", max_tokens=64)
                plain(scenario, "POST", "/v1/chat/completions", body)
            elif scenario == "mcp_direct":
                direct_mcp(scenario)
            elif scenario == "pull":
                pull_and_delete(scenario, PULL_REFS[index % len(PULL_REFS)])
            elif scenario == "unload":
                if not unload(scenario):
                    continue
        except Exception as e:  # a refused connection, a timeout, a reset: all failures of the server
            record(scenario, "exception", f"{type(e).__name__}: {e}")
            time.sleep(1)


def descendants(pid):
    children = defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                after = f.read().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if after[0] != "Z":
            children[int(after[1])].append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def is_template_worker(pid):
    """The server's own template-rendering worker (`model __render-template`), not an MCP server."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"__render-template" in f.read()
    except OSError:
        return False


def mcp_processes(pid):
    return [p for p in descendants(pid) if not is_template_worker(p)]


def metric(text, name):
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else 0.0


def sample(phase):
    with open(f"/proc/{SERVER_PID}/status") as f:
        rss_kib = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    fds = len(os.listdir(f"/proc/{SERVER_PID}/fd"))
    try:
        _, _, data = request("GET", "/metrics", timeout=30)
        text = data.decode()
        _, _, data = request("GET", "/health", timeout=30)
        loaded = len(json.loads(data).get("models_loaded", []))
    except Exception:
        text, loaded = "", -1
    return {"t": round(time.time() - started, 1), "phase": phase, "rss_mib": round(rss_kib / 1024, 1),
            "fds": fds, "models_loaded": loaded, "mcp_processes": len(mcp_processes(SERVER_PID)),
            "kv_blocks_used": metric(text, "model_runner:kv_cache_blocks_used"),
            # Blocks the prefix cache keeps by design (counted in kv_blocks_used, evicted when memory is needed).
            "prefix_cache_blocks": metric(text, "model_runner:prefix_cache_blocks"),
            "running": metric(text, "model_runner:num_requests_running"),
            "waiting": metric(text, "model_runner:num_requests_waiting")}


def main():
    global deadline, started
    started = time.time()
    # Warm-up: the model loaded, one of each kind, then the baseline.
    for scenario in ("chat", "mcp_direct"):
        if scenario == "chat":
            plain(scenario, "POST", "/v1/chat/completions", chat_body(False))
        else:
            direct_mcp(scenario)
    baseline = sample("baseline")
    print("baseline:", json.dumps(baseline), flush=True)
    samples = [baseline]
    deadline = time.time() + MINUTES * 60
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    next_sample = time.time() + SAMPLE_EVERY
    while time.time() < deadline:
        time.sleep(max(0.0, min(next_sample, deadline) - time.time()))
        if time.time() >= next_sample:
            samples.append(sample("load"))
            print("sample:", json.dumps(samples[-1]), flush=True)
            next_sample += SAMPLE_EVERY
    for t in threads:
        t.join(timeout=TIMEOUT + 30)
    stuck = sum(t.is_alive() for t in threads)
    # Idle: the running set drains, then the MCP servers' idle timeout passes.
    idle_until = time.time() + MCP_IDLE_SECS + 25
    while time.time() < idle_until:
        time.sleep(5)
        samples.append(sample("idle"))
    final = samples[-1]
    print("idle:", json.dumps(final), flush=True)

    checks = []
    # RSS is compared over samples with the model loaded (unloads drop its weights for a moment).
    load = [s for s in samples if s["phase"] == "load" and s["models_loaded"] > 0]
    if len(load) >= 4:
        q = len(load) // 4
        second, last = load[q:2 * q], load[-q:]
        a, b = statistics.mean(s["rss_mib"] for s in second), statistics.mean(s["rss_mib"] for s in last)
        checks.append((abs(b - a) <= 0.05 * a,
                       f"RSS flat after warm-up: 2nd quarter {a:.0f} MiB, last quarter {b:.0f} MiB ({(b - a) / a:+.1%}, limit 5%)"))
    else:
        checks.append((True, f"RSS flatness not judged: {len(load)} load samples (need 4)"))
    held = lambda s: s["kv_blocks_used"] - s["prefix_cache_blocks"]  # noqa: E731 (held by sequences)
    checks.append((held(final) == held(baseline) and final["running"] == 0,
                   f"KV blocks held by sequences once idle: {held(final):.0f} (baseline {held(baseline):.0f}; "
                   f"used {final['kv_blocks_used']:.0f}, prefix cache {final['prefix_cache_blocks']:.0f}, "
                   f"running {final['running']:.0f})"))
    checks.append((final["mcp_processes"] == 0,
                   f"MCP processes after idle stop: {final['mcp_processes']} (want 0; {MCP_IDLE_SECS:.0f}s idle timeout)"))
    checks.append((final["fds"] <= baseline["fds"] + 8,
                   f"open fds once idle: {final['fds']} (baseline {baseline['fds']}, allowed +8)"))
    with counts_lock:
        bad = {f"{s}:{o}": n for s, c in counts.items() for o, n in c.items()
               if o not in ("200", "503", "disconnected", "ok")}
        table = {s: dict(c) for s, c in sorted(counts.items())}
    checks.append((not bad, f"responses beyond 200/503 and dropped streams: {bad or 'none'}"))
    checks.append((stuck == 0, f"clients still waiting on a response after the deadline: {stuck}"))

    print("\nresponses by scenario and status:")
    for scenario, c in table.items():
        print(f"  {scenario:15} " + ", ".join(f"{k}: {v}" for k, v in sorted(c.items())))
    print(f"  total {sum(sum(c.values()) for c in table.values())} in {MINUTES:g} min with {CLIENTS} clients")
    rss = [s["rss_mib"] for s in load] or [0]
    print(f"\nRSS under load: min {min(rss):.0f}, max {max(rss):.0f} MiB; fds max {max(s['fds'] for s in samples)}; "
          f"MCP processes max {max(s['mcp_processes'] for s in samples)}; "
          f"KV blocks used max {max(s['kv_blocks_used'] for s in samples):.0f}")
    if failures:
        print("\nfirst failures:")
        for f in failures[:20]:
            print(f"  {f[0]} {f[1]}: {f[2]}")
    print("\nchecks:")
    for ok, text in checks:
        print(f"  [{'ok' if ok else 'FAIL'}] {text}")
    if REPORT:
        with open(REPORT, "w") as f:
            json.dump({"samples": samples, "counts": table, "failures": failures,
                       "checks": [{"ok": ok, "check": t} for ok, t in checks]}, f, indent=1)
    return 0 if all(ok for ok, _ in checks) else 1


started = time.time()
if __name__ == "__main__":
    sys.exit(main())
