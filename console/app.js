// The model-runner console: chat, models, MCP and metrics pages over the server's own API. No library;
// text from the server or a model is only ever set as textContent (see markdown.js).
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const KEY_STORE = "model-runner.api-key";
const CONVERSATIONS_STORE = "model-runner.conversations";
const CURRENT_STORE = "model-runner.current";
const THEME_STORE = "model-runner.theme";
const CALL_LOG_STORE = "model-runner.mcp-calls";
const METRICS_WINDOW_MS = 15 * 60 * 1000;
const METRICS_SHOWN_STORE = "model-runner.metrics-window";
const METRICS_EVERY_MS = 2000;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function setStatus(message, isError = false) {
  const status = $("#status");
  status.textContent = message || "";
  status.classList.toggle("error", Boolean(isError && message));
}

function formatBytes(bytes) {
  if (!Number.isFinite(bytes) || bytes <= 0) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (bytes >= 1024 && i < units.length - 1) { bytes /= 1024; i++; }
  return bytes.toFixed(i ? 1 : 0) + " " + units[i];
}

function readJson(key, fallback) {
  try { return JSON.parse(localStorage.getItem(key)) ?? fallback; } catch { return fallback; }
}

// ---------------------------------------------------------------------------------------------------
// The API: same origin, JSON bodies, the key (if any) as a bearer token, asked for on a 401.

let apiKey = sessionStorage.getItem(KEY_STORE) || "";
let keyPrompt = null;

function askKey() {
  if (keyPrompt) return keyPrompt;
  const dialog = $("#key-dialog");
  keyPrompt = new Promise((resolve) => {
    $("#key-input").value = apiKey;
    dialog.addEventListener("close", () => {
      if (dialog.returnValue === "save") {
        apiKey = $("#key-input").value.trim();
        if (apiKey) sessionStorage.setItem(KEY_STORE, apiKey); else sessionStorage.removeItem(KEY_STORE);
        resolve(true);
      } else resolve(false);
      keyPrompt = null;
    }, { once: true });
    dialog.showModal();
  });
  return keyPrompt;
}

function headers(extra = {}) {
  const out = { ...extra };
  if (apiKey) out.Authorization = "Bearer " + apiKey;
  return out;
}

// fetch() on this server; a 401 asks for the key once and retries.
async function api(path, { method = "GET", body, signal, accept, extraHeaders } = {}) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const init = { method, signal, headers: headers(extraHeaders) };
    if (accept) init.headers.Accept = accept;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = typeof body === "string" ? body : JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (response.status === 401 && attempt === 0 && await askKey()) continue;
    return response;
  }
  throw new Error("unreachable");
}

async function errorOf(response) {
  const text = await response.text().catch(() => "");
  try {
    const parsed = JSON.parse(text);
    const message = parsed?.error?.message ?? parsed?.error ?? parsed?.message;
    if (message) return `${response.status}: ${typeof message === "string" ? message : JSON.stringify(message)}`;
  } catch { /* not JSON */ }
  return `${response.status}: ${text.slice(0, 300) || response.statusText}`;
}

async function getJson(path) {
  const response = await api(path);
  if (!response.ok) throw new Error(await errorOf(response));
  return response.json();
}

// Server-sent events from a fetch body: yields each event's data string.
async function* sseData(response, signal) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    while (true) {
      if (signal?.aborted) return;
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
        if (data) yield data;
      }
    }
    if (buffer.trim().startsWith("data:")) yield buffer.trim().slice(5).trim();
  } finally {
    reader.cancel().catch(() => {});
  }
}

// Newline-delimited JSON from a fetch body.
async function* jsonLines(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  while (true) {
    const { value, done } = await reader.read();
    if (value) buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 1);
      if (line) yield JSON.parse(line);
    }
    if (done) break;
  }
  if (buffer.trim()) yield JSON.parse(buffer);
}

// ---------------------------------------------------------------------------------------------------
// Pages and theme.

const PAGES = ["chat", "models", "mcp", "metrics"];
const pageLoaders = {};

function showPage() {
  const name = PAGES.includes(location.hash.slice(1)) ? location.hash.slice(1) : "chat";
  for (const page of PAGES) {
    $("#page-" + page).hidden = page !== name;
    const link = $("#nav-" + page);
    if (page === name) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  document.title = `${name[0].toUpperCase()}${name.slice(1)} · model-runner console`;
  setStatus("");
  pageLoaders[name]?.();
}

function applyTheme() {
  const chosen = localStorage.getItem(THEME_STORE);
  if (chosen) document.documentElement.dataset.theme = chosen; else delete document.documentElement.dataset.theme;
  const dark = chosen ? chosen === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  $("#theme-button").textContent = dark ? "Light theme" : "Dark theme";
  redrawCharts();
}

function toggleTheme() {
  const dark = document.documentElement.dataset.theme
    ? document.documentElement.dataset.theme === "dark"
    : matchMedia("(prefers-color-scheme: dark)").matches;
  localStorage.setItem(THEME_STORE, dark ? "light" : "dark");
  applyTheme();
}

// ---------------------------------------------------------------------------------------------------
// Chat.

let conversations = readJson(CONVERSATIONS_STORE, []);
let currentId = localStorage.getItem(CURRENT_STORE);
let streaming = null; // {controller}
let storedModels = [];
let mcpServers = [];

function saveConversations() {
  try {
    localStorage.setItem(CONVERSATIONS_STORE, JSON.stringify(conversations));
    localStorage.setItem(CURRENT_STORE, currentId || "");
  } catch (error) {
    setStatus("Could not save conversations: " + error.message, true);
  }
}

function current() {
  let conversation = conversations.find((c) => c.id === currentId);
  if (!conversation) conversation = newConversation();
  return conversation;
}

function newConversation() {
  const previous = conversations.find((c) => c.id === currentId);
  const conversation = {
    id: (crypto.randomUUID?.() ?? String(Date.now()) + Math.random()),
    title: "New chat",
    created: new Date().toISOString(),
    model: previous?.model || storedModels[0] || "",
    system: previous?.system || "",
    temperature: previous?.temperature ?? 0.7,
    maxTokens: previous?.maxTokens ?? 512,
    mcp: [],
    messages: [],
  };
  conversations.unshift(conversation);
  currentId = conversation.id;
  saveConversations();
  return conversation;
}

function renderConversationList() {
  const list = $("#conversation-list");
  list.replaceChildren();
  for (const c of conversations) {
    list.append(el("li", {},
      el("button", { type: "button", class: "open", "aria-current": c.id === currentId ? "true" : null, title: c.title, text: c.title, onclick: () => openConversation(c.id) }),
      el("button", { type: "button", class: "ghost delete", "aria-label": `Delete conversation ${c.title}`, text: "×", onclick: () => deleteConversation(c.id) })));
  }
}

function openConversation(id) {
  if (streaming) return;
  currentId = id;
  saveConversations();
  renderChat();
}

function deleteConversation(id) {
  if (streaming && id === currentId) return;
  conversations = conversations.filter((c) => c.id !== id);
  if (currentId === id) currentId = conversations[0]?.id || null;
  saveConversations();
  renderChat();
}

function renderSettings(conversation) {
  const select = $("#chat-model");
  const names = [...new Set([...storedModels, conversation.model].filter(Boolean))];
  select.replaceChildren(...names.map((name) => el("option", { value: name, text: name })));
  if (!names.length) select.append(el("option", { value: "", text: "No stored models: pull one on the Models page" }));
  select.value = conversation.model || names[0] || "";
  conversation.model = select.value;
  $("#chat-temperature").value = conversation.temperature;
  $("#chat-max-tokens").value = conversation.maxTokens;
  $("#chat-system").value = conversation.system;
  const fieldset = $("#chat-mcp");
  fieldset.querySelectorAll("label").forEach((label) => label.remove());
  $("#chat-mcp-empty").hidden = mcpServers.length > 0;
  for (const server of mcpServers) {
    const box = el("input", { type: "checkbox", value: server.name, checked: conversation.mcp.includes(server.name) });
    box.addEventListener("change", () => {
      conversation.mcp = [...fieldset.querySelectorAll("input:checked")].map((b) => b.value);
      saveConversations();
    });
    const note = server.running || server.state === "idle" ? "" : ` (${SERVER_STATES[server.state] ?? "not running"})`;
    fieldset.append(el("label", {}, box, `${server.name}${note}`));
  }
}

function renderMessage(message) {
  const node = el("article", { class: "message " + message.role, "aria-label": message.role === "user" ? "Your message" : "Answer" });
  node.append(el("div", { class: "role", text: message.role === "user" ? "You" : (message.model || "Assistant") }));
  if (message.role === "user") {
    node.append(el("div", { class: "md" }, ...message.content.split("\n").flatMap((line, i) => (i ? [el("br"), line] : [line]))));
    return node;
  }
  if (message.reasoning) {
    node.append(el("details", { class: "reasoning", "data-part": "reasoning" },
      el("summary", { text: message.done ? "Thought" : "Thinking…" }),
      el("div", { class: "reasoning-body", text: message.reasoning })));
  }
  for (const call of message.calls || []) {
    const status = call.status || "in_progress";
    const label = status === "in_progress" ? "running" : status;
    node.append(el("details", { class: `tool-call ${status}`, "data-part": `call-${call.id}` },
      el("summary", { text: `Tool call: ${call.name} (${label}${call.duration_ms ? `, ${Math.round(call.duration_ms)} ms` : ""})` }),
      el("div", { class: "muted", text: "Arguments" }),
      el("pre", { class: "code", tabindex: "0", text: typeof call.arguments === "string" ? call.arguments : JSON.stringify(call.arguments ?? {}, null, 2) }),
      call.result !== undefined || call.error ? el("div", { class: "muted", text: call.error ? "Error" : "Result" }) : null,
      call.result !== undefined || call.error ? el("pre", { class: "code", tabindex: "0", text: call.error || (call.result ?? "") }) : null));
  }
  const body = Markdown.render(message.content || "");
  body.classList.add("answer");
  node.append(body);
  if (message.error) node.append(el("p", { class: "error", role: "alert", text: message.error }));
  if (message.stats) {
    const s = message.stats;
    const parts = [];
    if (s.tokens !== undefined) parts.push(`${s.tokens} tokens`);
    if (s.tps !== undefined) parts.push(`${s.tps.toFixed(1)} tokens/s`);
    if (s.ttft !== undefined) parts.push(`TTFT ${Math.round(s.ttft)} ms`);
    if (s.stopped) parts.push("stopped");
    node.append(el("div", { class: "stats", text: parts.join(" · ") }));
  }
  return node;
}

// Brings `node`, an answer's article, up to date with `message` in place while it streams: the article
// and its answer element stay the same nodes (a screen reader, a selection or a test holding them keeps
// them, and the log does not announce a new article per token); folded parts keep their open state.
function updateMessage(node, message) {
  const fresh = renderMessage(message);
  for (const part of fresh.querySelectorAll(":scope > details[data-part]")) {
    const before = node.querySelector(`:scope > details[data-part="${CSS.escape(part.dataset.part)}"]`);
    if (before?.open) part.open = true;
  }
  const answer = node.querySelector(":scope > .answer");
  const freshAnswer = fresh.querySelector(":scope > .answer");
  if (answer && freshAnswer) {
    answer.replaceChildren(...freshAnswer.childNodes);
    freshAnswer.replaceWith(answer);
  }
  node.replaceChildren(...fresh.childNodes);
}

function renderMessages(conversation) {
  const box = $("#messages");
  box.replaceChildren(...conversation.messages.map(renderMessage));
  box.scrollTop = box.scrollHeight;
}

function renderChat() {
  const conversation = current();
  renderConversationList();
  renderSettings(conversation);
  renderMessages(conversation);
}

async function loadChatSources() {
  try {
    const models = await getJson("/models");
    storedModels = models.flatMap((m) => (m.tags && m.tags.length ? [m.tags[0]] : [m.id]));
  } catch (error) {
    setStatus("Could not list models: " + error.message, true);
  }
  try {
    const health = await getJson("/health");
    mcpServers = health.mcp_servers || [];
  } catch { mcpServers = []; }
}

function setStreaming(on) {
  $("#send").disabled = on;
  $("#stop").disabled = !on;
}

async function sendMessage(text) {
  const conversation = current();
  if (streaming || !text.trim()) return;
  if (!conversation.model) { setStatus("Choose a model first (pull one on the Models page).", true); return; }
  conversation.temperature = Number($("#chat-temperature").value);
  conversation.maxTokens = Number($("#chat-max-tokens").value);
  conversation.system = $("#chat-system").value;
  conversation.messages.push({ role: "user", content: text });
  if (conversation.title === "New chat") conversation.title = text.trim().slice(0, 48);
  const answer = { role: "assistant", model: conversation.model, content: "", reasoning: "", calls: [], done: false };
  conversation.messages.push(answer);
  saveConversations();
  renderConversationList();
  renderMessages(conversation);
  const box = $("#messages");
  // The answer's article: the list may be drawn afresh while the answer streams (the page shown
  // again, a conversation deleted); the answer is then the last article of the new list.
  const answerNode = () => {
    const last = box.lastElementChild;
    return last?.classList.contains("assistant") ? last : null;
  };
  let pending = false;
  const paint = () => {
    pending = false;
    if (currentId !== conversation.id) return;
    const node = answerNode();
    if (!node) return;
    const follow = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    updateMessage(node, answer);
    if (follow) box.scrollTop = box.scrollHeight;
  };
  // At most one paint per frame; a hidden tab gets no frames, so a timer stands in.
  const repaint = () => {
    if (pending) return;
    pending = true;
    if (document.hidden) setTimeout(paint, 100); else requestAnimationFrame(paint);
  };
  const request = {
    model: conversation.model,
    messages: [
      ...(conversation.system.trim() ? [{ role: "system", content: conversation.system }] : []),
      ...conversation.messages.slice(0, -1).filter((m) => !m.error || m.content).map((m) => ({ role: m.role, content: m.content })),
    ],
    stream: true,
    stream_options: { include_usage: true },
  };
  if (Number.isFinite(conversation.temperature)) request.temperature = conversation.temperature;
  if (conversation.maxTokens > 0) request.max_tokens = conversation.maxTokens;
  if (conversation.mcp.length) request.tools = conversation.mcp.map((name) => ({ type: "mcp", server_label: name }));
  const controller = new AbortController();
  streaming = { controller };
  setStreaming(true);
  const started = performance.now();
  let first = null;
  let pieces = 0;
  let usage = null;
  try {
    const response = await api("/v1/chat/completions", { method: "POST", body: request, signal: controller.signal, accept: "text/event-stream" });
    if (!response.ok) throw new Error(await errorOf(response));
    for await (const data of sseData(response, controller.signal)) {
      if (data === "[DONE]") break;
      let chunk;
      try { chunk = JSON.parse(data); } catch { continue; }
      if (chunk.error) throw new Error(chunk.error.message || JSON.stringify(chunk.error));
      if (chunk.usage) usage = chunk.usage;
      if (chunk.mcp_call) {
        const call = chunk.mcp_call;
        const known = answer.calls.find((c) => c.id === call.id);
        if (known) Object.assign(known, call); else answer.calls.push({ ...call });
        if (call.status && call.status !== "in_progress") logCall({ tool: call.name, from: "chat", ms: call.duration_ms, ok: call.status === "completed", error: call.error });
      }
      const delta = chunk.choices?.[0]?.delta;
      if (delta) {
        if (delta.reasoning_content) { answer.reasoning += delta.reasoning_content; first ??= performance.now(); pieces++; }
        if (delta.content) { answer.content += delta.content; first ??= performance.now(); pieces++; }
      }
      repaint();
    }
  } catch (error) {
    if (error.name === "AbortError") answer.stopped = true;
    else answer.error = error.message;
  } finally {
    const ended = performance.now();
    const tokens = usage?.completion_tokens ?? pieces;
    answer.done = true;
    answer.stats = { tokens, stopped: answer.stopped || undefined };
    if (first !== null) {
      answer.stats.ttft = first - started;
      const seconds = (ended - first) / 1000;
      if (seconds > 0 && tokens > 1) answer.stats.tps = (tokens - 1) / seconds;
    }
    streaming = null;
    setStreaming(false);
    saveConversations();
    paint();
  }
}

function exportConversation() {
  const conversation = current();
  const blob = new Blob([JSON.stringify(conversation, null, 2)], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: `${conversation.title.replace(/[^\w.-]+/g, "_") || "conversation"}.json` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

pageLoaders.chat = async () => {
  await loadChatSources();
  renderChat();
};

// ---------------------------------------------------------------------------------------------------
// Models.

async function loadModels() {
  const tbody = $("#models-table tbody");
  try {
    const models = await getJson("/models");
    storedModels = models.flatMap((m) => (m.tags && m.tags.length ? [m.tags[0]] : [m.id]));
    tbody.replaceChildren(...models.map((m) => {
      const name = m.tags?.[0] || m.id;
      const c = m.config || {};
      return el("tr", {},
        el("td", { class: "mono", text: (m.tags || []).join(", ") || "(untagged)" }),
        el("td", { class: "mono", text: String(m.id).replace("sha256:", "").slice(0, 12) }),
        el("td", { text: c.parameters || "-" }),
        el("td", { text: c.quantization || "-" }),
        el("td", { text: c.size || "-" }),
        el("td", { text: c.architecture || "-" }),
        el("td", { text: c.context_size ? String(c.context_size) : "-" }),
        el("td", {}, el("div", { class: "row" },
          el("button", { type: "button", class: "ghost", text: "Chat", "aria-label": `Chat with ${name}`, onclick: () => chatWith(name) }),
          el("button", { type: "button", class: "ghost", text: "Inspect", "aria-label": `Inspect ${name}`, onclick: () => inspectModel(name) }),
          el("button", { type: "button", class: "danger", text: "Remove", "aria-label": `Remove ${name}`, onclick: () => removeModel(name) }))));
    }));
    if (!models.length) tbody.append(el("tr", {}, el("td", { colspan: "8", class: "muted", text: "No models stored yet." })));
  } catch (error) {
    setStatus("Could not list models: " + error.message, true);
  }
}

async function loadLoaded() {
  const tbody = $("#loaded-table tbody");
  try {
    const { models } = await getJson("/api/ps");
    tbody.replaceChildren(...models.map((m) => el("tr", {},
      el("td", { class: "mono", text: m.name }),
      el("td", { text: formatBytes(m.size) }),
      el("td", { text: m.device || "-" }),
      el("td", { text: m.context_length ? String(m.context_length) : "-" }),
      el("td", { text: m.expires_at?.startsWith("9999") ? "never" : new Date(m.expires_at).toLocaleTimeString() }),
      el("td", {}, el("button", { type: "button", class: "ghost", text: "Unload", "aria-label": `Unload ${m.name}`, onclick: () => unloadModel(m.name) })))));
    if (!models.length) tbody.append(el("tr", {}, el("td", { colspan: "6", class: "muted", text: "No model is loaded; one loads on its first request." })));
  } catch (error) {
    setStatus("Could not list loaded models: " + error.message, true);
  }
}

function chatWith(name) {
  const conversation = current();
  if (!streaming) conversation.model = name;
  saveConversations();
  location.hash = "#chat";
}

async function inspectModel(name) {
  try {
    const model = await getJson("/models/" + encodeURI(name));
    $("#inspect-title").textContent = "Inspect " + name;
    $("#inspect-json").textContent = JSON.stringify(model, null, 2);
    $("#inspect-panel").hidden = false;
    $("#inspect-json").focus();
  } catch (error) {
    setStatus(`Could not inspect ${name}: ${error.message}`, true);
  }
}

async function removeModel(name) {
  if (!confirm(`Remove ${name} from the store?`)) return;
  const response = await api("/models/" + encodeURI(name), { method: "DELETE" });
  if (!response.ok) setStatus(`Could not remove ${name}: ${await errorOf(response)}`, true);
  else setStatus(`Removed ${name}.`);
  await Promise.all([loadModels(), loadLoaded()]);
}

async function unloadModel(name) {
  const response = await api("/api/generate", { method: "POST", body: { model: name, keep_alive: 0 } });
  if (!response.ok) setStatus(`Could not unload ${name}: ${await errorOf(response)}`, true);
  else setStatus(`Unloaded ${name}.`);
  await loadLoaded();
}

// POST /models/create streams one JSON object per line: layer sizes as they start, bytes as they come.
async function pullModel(reference) {
  const progress = $("#pull-progress");
  const percent = $("#pull-percent");
  const message = $("#pull-message");
  const button = $("#pull-button");
  const show = (value) => {
    const rounded = Math.floor(value);
    progress.value = rounded;
    percent.textContent = rounded + "%";
  };
  button.disabled = true;
  show(0);
  message.textContent = `Pulling ${reference}…`;
  const layers = new Map(); // id -> {size, current}
  try {
    const response = await api("/models/create", { method: "POST", body: { from: reference } });
    if (!response.ok) throw new Error(await errorOf(response));
    for await (const line of jsonLines(response)) {
      if (line.type === "error") throw new Error(line.message);
      if (line.type === "success") { show(100); message.textContent = line.message; break; }
      const layer = line.layer;
      if (layer?.id) {
        const known = layers.get(layer.id) || { size: 0, current: 0 };
        if (layer.size) known.size = layer.size;
        if (layer.current !== undefined) known.current = layer.current;
        else if (line.message?.startsWith("Downloaded")) known.current = known.size;
        layers.set(layer.id, known);
        let size = 0, done = 0;
        for (const l of layers.values()) { size += l.size; done += Math.min(l.current, l.size); }
        if (size > 0) show(Math.min(99, (done / size) * 100));
      }
      if (line.message) message.textContent = line.message;
    }
    if (progress.value < 100) throw new Error("the pull ended without success");
    setStatus(`Pulled ${reference}.`);
  } catch (error) {
    message.textContent = "Pull failed: " + error.message;
    setStatus("Pull failed: " + error.message, true);
  } finally {
    button.disabled = false;
    await loadModels();
  }
}

pageLoaders.models = () => Promise.all([loadModels(), loadLoaded()]);

// ---------------------------------------------------------------------------------------------------
// MCP: the gateway's /mcp endpoint over streamable HTTP (JSON-RPC; answers as JSON or as SSE).

const mcp = {
  session: null,
  nextId: 1,
  async post(message, retry = true) {
    const extraHeaders = { "MCP-Protocol-Version": "2025-06-18" };
    if (this.session) extraHeaders["Mcp-Session-Id"] = this.session;
    const response = await api("/mcp", { method: "POST", body: message, accept: "application/json, text/event-stream", extraHeaders });
    if (response.status === 404 && this.session && retry) {
      // The server forgot the session (restarted): start a new one.
      this.session = null;
      await this.initialize();
      return this.post(message, false);
    }
    if (!response.ok && response.status !== 202) throw new Error(await errorOf(response));
    const session = response.headers.get("Mcp-Session-Id");
    if (session) this.session = session;
    if (message.id === undefined) return null;
    const type = response.headers.get("Content-Type") || "";
    if (type.includes("text/event-stream")) {
      for await (const data of sseData(response)) {
        let parsed;
        try { parsed = JSON.parse(data); } catch { continue; }
        if (parsed.id === message.id) return parsed;
      }
      throw new Error("the MCP stream ended without an answer");
    }
    return response.json();
  },
  async initialize() {
    const answer = await this.post({ jsonrpc: "2.0", id: this.nextId++, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "model-runner-console", version: "1" } } }, false);
    if (answer.error) throw new Error(answer.error.message);
    await this.post({ jsonrpc: "2.0", method: "notifications/initialized" }, false);
  },
  async request(method, params) {
    if (!this.session) await this.initialize();
    const answer = await this.post({ jsonrpc: "2.0", id: this.nextId++, method, params });
    if (answer.error) throw new Error(answer.error.message);
    return answer.result;
  },
};

let callLog = (() => { try { return JSON.parse(sessionStorage.getItem(CALL_LOG_STORE)) || []; } catch { return []; } })();

function logCall(entry) {
  callLog.unshift({ time: new Date().toISOString(), ...entry });
  callLog = callLog.slice(0, 50);
  sessionStorage.setItem(CALL_LOG_STORE, JSON.stringify(callLog));
  renderCallLog();
}

function renderCallLog() {
  const tbody = $("#mcp-log tbody");
  tbody.replaceChildren(...callLog.map((c) => el("tr", {},
    el("td", { text: new Date(c.time).toLocaleTimeString() }),
    el("td", { class: "mono", text: c.tool }),
    el("td", { text: c.from }),
    el("td", { text: Number.isFinite(c.ms) ? `${Math.round(c.ms)} ms` : "-" }),
    el("td", { class: c.ok ? "ok" : "failed", text: c.ok ? "ok" : (c.error || "error") }))));
  if (!callLog.length) tbody.append(el("tr", {}, el("td", { colspan: "5", class: "muted", text: "No calls from this console yet." })));
}

// One form control per property of a tool's input schema; objects and arrays as JSON text.
function schemaField(name, schema, required, toolName) {
  const id = `arg-${toolName}-${name}`.replace(/[^\w-]/g, "_");
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;
  let input;
  if (Array.isArray(schema.enum)) {
    input = el("select", { id, name });
    if (!required) input.append(el("option", { value: "", text: "(none)" }));
    for (const value of schema.enum) input.append(el("option", { value: JSON.stringify(value), text: String(value) }));
  } else if (type === "boolean") {
    input = el("input", { id, name, type: "checkbox", checked: schema.default === true });
  } else if (type === "integer" || type === "number") {
    input = el("input", { id, name, type: "number", step: type === "integer" ? "1" : "any", min: schema.minimum, max: schema.maximum, value: schema.default });
  } else if (type === "object" || type === "array" || type === undefined) {
    input = el("textarea", { id, name, rows: "3", class: "mono", placeholder: type === "array" ? "[ ]" : "{ }" });
    if (schema.default !== undefined) input.value = JSON.stringify(schema.default);
  } else {
    input = el("input", { id, name, type: "text", value: schema.default, autocomplete: "off" });
  }
  input.dataset.kind = Array.isArray(schema.enum) ? "enum" : (type || "json");
  if (required && type !== "boolean") input.required = true;
  const wide = input.tagName === "TEXTAREA";
  return el("label", { class: wide ? "wide" : null, for: id },
    `${name}${required ? " *" : ""}${schema.description ? ` — ${schema.description}` : ""}`, input);
}

function formArguments(form) {
  const args = {};
  for (const input of form.querySelectorAll("[data-kind]")) {
    const kind = input.dataset.kind;
    if (kind === "boolean") { args[input.name] = input.checked; continue; }
    if (input.value === "") continue;
    if (kind === "enum") args[input.name] = JSON.parse(input.value);
    else if (kind === "integer") args[input.name] = parseInt(input.value, 10);
    else if (kind === "number") args[input.name] = Number(input.value);
    else if (kind === "string") args[input.name] = input.value;
    else {
      try { args[input.name] = JSON.parse(input.value); } catch { throw new Error(`${input.name} is not valid JSON`); }
    }
  }
  return args;
}

function renderTool(tool) {
  const schema = tool.inputSchema || {};
  const required = new Set(schema.required || []);
  const result = el("pre", { class: "code result", tabindex: "0", "aria-live": "polite", hidden: true });
  const form = el("form", { "aria-label": `Call ${tool.name}` });
  for (const [name, property] of Object.entries(schema.properties || {})) form.append(schemaField(name, property || {}, required.has(name), tool.name));
  form.append(el("div", { class: "actions row" }, el("button", { type: "submit", text: "Call" })));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    result.hidden = false;
    result.classList.remove("failed");
    result.textContent = "Calling…";
    const started = performance.now();
    try {
      const args = formArguments(form);
      const answer = await mcp.request("tools/call", { name: tool.name, arguments: args });
      const text = (answer.content || []).map((c) => (c.type === "text" ? c.text : JSON.stringify(c))).join("\n");
      result.textContent = text || JSON.stringify(answer.structuredContent ?? answer, null, 2);
      result.classList.toggle("failed", Boolean(answer.isError));
      result.dataset.outcome = answer.isError ? "error" : "ok";
      logCall({ tool: tool.name, from: "console", ms: performance.now() - started, ok: !answer.isError, error: answer.isError ? "tool error" : undefined });
    } catch (error) {
      result.textContent = error.message;
      result.classList.add("failed");
      result.dataset.outcome = "error";
      logCall({ tool: tool.name, from: "console", ms: performance.now() - started, ok: false, error: error.message });
    } finally {
      button.disabled = false;
    }
  });
  return el("details", { class: "tool", "data-tool": tool.name },
    el("summary", {}, el("span", { class: "mono", text: tool.name }), tool.description ? ` — ${tool.description.split("\n")[0].slice(0, 160)}` : ""),
    tool.description && tool.description.includes("\n") ? el("p", { class: "muted", text: tool.description }) : null,
    form,
    result,
    el("details", {}, el("summary", { text: "Input schema" }), el("pre", { class: "code", tabindex: "0", text: JSON.stringify(schema, null, 2) })));
}

let mcpTools = [];

function renderTools() {
  const filter = $("#mcp-filter").value.trim().toLowerCase();
  const shown = mcpTools.filter((t) => !filter || t.name.toLowerCase().includes(filter) || (t.description || "").toLowerCase().includes(filter));
  $("#mcp-tools").replaceChildren(...shown.map(renderTool));
}

// /health's server states in words.
const SERVER_STATES = {
  running: "running",
  idle: "idle (starts on its next call)",
  crashed: "crashed or failing to start",
  breaker_open: "circuit breaker open",
};

// The gateway's servers as /health reports them; false when no gateway is configured.
async function loadMcpServers() {
  const health = await getJson("/health");
  mcpServers = health.mcp_servers || [];
  const configured = Array.isArray(health.mcp_servers);
  $("#mcp-none").hidden = configured;
  $("#mcp-servers").replaceChildren(...mcpServers.map((s) => {
    const state = SERVER_STATES[s.state] ?? (s.running ? "running" : "stopped");
    const crashes = s.crashes ? `, ${s.crashes} crash${s.crashes === 1 ? "" : "es"}` : "";
    return el("li", { class: s.running ? "up" : (s.state === "idle" ? "idle" : "down"), "data-state": s.state, text: `${s.name}: ${state}${crashes}` });
  }));
  return configured;
}

async function loadMcp() {
  renderCallLog();
  let configured;
  try { configured = await loadMcpServers(); } catch (error) { setStatus("Could not read /health: " + error.message, true); return; }
  if (!configured) { mcpTools = []; renderTools(); return; }
  try {
    const tools = [];
    let cursor;
    for (let page = 0; page < 20; page++) {
      const result = await mcp.request("tools/list", cursor ? { cursor } : {});
      tools.push(...(result.tools || []));
      cursor = result.nextCursor;
      if (!cursor) break;
    }
    mcpTools = tools.sort((a, b) => a.name.localeCompare(b.name));
    renderTools();
  } catch (error) {
    setStatus("Could not list MCP tools: " + error.message, true);
  }
  // The gateway starts its servers on first use: listing the tools may have started them.
  try { await loadMcpServers(); } catch { /* the status line already says what failed */ }
}

pageLoaders.mcp = loadMcp;

// ---------------------------------------------------------------------------------------------------
// Metrics: /metrics (Prometheus text) read every two seconds; rates from the difference of counters.

const CHARTS = [
  { id: "tokens", title: "Generation tokens/s", series: ["tokens/s"], digits: 1 },
  { id: "latency", title: "TTFT and inter-token latency (ms)", series: ["TTFT", "ITL"], digits: 0 },
  { id: "queue", title: "Requests waiting and running", series: ["waiting", "running"], digits: 0 },
  { id: "kv", title: "KV cache blocks used", series: ["used", "total"], digits: 0 },
  { id: "prefix", title: "Prefix-cache hit rate (%)", series: ["hit rate"], digits: 0 },
  { id: "mcp", title: "MCP tool calls per minute", series: ["calls", "errors"], digits: 0 },
];
const samples = Object.fromEntries(CHARTS.map((c) => [c.id, c.series.map(() => [])]));
let previousScrape = null;
let scrapes = 0;

function parsePrometheus(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    const value = Number(line.slice(space + 1));
    const head = line.slice(0, space).trim();
    const brace = head.indexOf("{");
    const name = brace < 0 ? head : head.slice(0, brace);
    const labels = {};
    if (brace >= 0) for (const m of head.slice(brace).matchAll(/([\w]+)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]] = m[2];
    out.push({ name, labels, value });
  }
  return out;
}

function total(series, name) {
  return series.filter((s) => s.name === name).reduce((sum, s) => sum + (Number.isFinite(s.value) ? s.value : 0), 0);
}

function record(chartId, index, time, value) {
  const points = samples[chartId][index];
  points.push([time, value]);
  while (points.length && points[0][0] < time - METRICS_WINDOW_MS) points.shift();
}

async function scrapeMetrics() {
  let text;
  try {
    const response = await api("/metrics");
    if (!response.ok) return;
    text = await response.text();
  } catch { return; }
  const now = Date.now();
  const series = parsePrometheus(text);
  const read = (name) => total(series, "model_runner:" + name);
  const scrape = {
    time: now,
    generated: read("generation_tokens_total"),
    ttftSum: read("time_to_first_token_seconds_sum"), ttftCount: read("time_to_first_token_seconds_count"),
    itlSum: read("inter_token_latency_seconds_sum"), itlCount: read("inter_token_latency_seconds_count"),
    hits: read("prefix_cache_hits_total"), queries: read("prefix_cache_queries_total"),
    calls: read("mcp_tool_calls_total"), errors: read("mcp_tool_errors_total"),
  };
  record("queue", 0, now, read("num_requests_waiting"));
  record("queue", 1, now, read("num_requests_running"));
  record("kv", 0, now, read("kv_cache_blocks_used"));
  record("kv", 1, now, read("kv_cache_blocks_total"));
  const before = previousScrape;
  if (before) {
    const seconds = (now - before.time) / 1000;
    // A counter that went down is a model that was reloaded: start its rate afresh.
    const delta = (key) => Math.max(0, scrape[key] - before[key]);
    record("tokens", 0, now, seconds > 0 ? delta("generated") / seconds : 0);
    const ttftN = delta("ttftCount"), itlN = delta("itlCount");
    record("latency", 0, now, ttftN > 0 ? (delta("ttftSum") / ttftN) * 1000 : NaN);
    record("latency", 1, now, itlN > 0 ? (delta("itlSum") / itlN) * 1000 : NaN);
    const queries = delta("queries");
    record("prefix", 0, now, queries > 0 ? (delta("hits") / queries) * 100 : NaN);
    record("mcp", 0, now, seconds > 0 ? (delta("calls") * 60) / seconds : 0);
    record("mcp", 1, now, seconds > 0 ? (delta("errors") * 60) / seconds : 0);
  }
  previousScrape = scrape;
  scrapes++;
  redrawCharts();
}

function buildCharts() {
  const box = $("#charts");
  box.replaceChildren(...CHARTS.map((chart) => el("figure", { class: "chart", id: "chart-" + chart.id },
    el("figcaption", {}, el("span", { text: chart.title }), el("span", { class: "value", id: `chart-${chart.id}-value`, text: "-" })),
    el("canvas", { role: "img", "aria-label": chart.title, width: "340", height: "140" }),
    el("div", { class: "legend" }, ...chart.series.map((name, i) => el("span", {}, el("span", { class: `swatch swatch-${i}`, "aria-hidden": "true" }), name))))));
}

// How much of the kept window the charts show: 1, 5 or 15 minutes, chosen on the page.
function shownWindowMs() {
  const minutes = Number($("#metrics-window")?.value) || 15;
  return Math.min(minutes * 60 * 1000, METRICS_WINDOW_MS);
}

function redrawCharts() {
  if ($("#page-metrics")?.hidden !== false) return;
  const now = Date.now();
  for (const chart of CHARTS) {
    const figure = $("#chart-" + chart.id);
    if (!figure) continue;
    const data = chart.series.map((name, i) => ({ name, points: samples[chart.id][i] }));
    const canvas = figure.querySelector("canvas");
    Charts.draw(canvas, data, shownWindowMs(), now);
    const latest = data.map((s) => {
      const last = [...s.points].reverse().find(([, v]) => Number.isFinite(v));
      return last ? `${s.name} ${last[1].toFixed(chart.digits)}` : `${s.name} -`;
    }).join(", ");
    $(`#chart-${chart.id}-value`).textContent = latest;
    canvas.setAttribute("aria-label", `${chart.title}: ${latest}`);
    figure.dataset.samples = String(data.reduce((n, s) => n + s.points.length, 0));
  }
  $("#charts").dataset.scrapes = String(scrapes);
}

pageLoaders.metrics = redrawCharts;

// ---------------------------------------------------------------------------------------------------
// Wiring.

function wire() {
  window.addEventListener("hashchange", showPage);
  $("#theme-button").addEventListener("click", toggleTheme);
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", applyTheme);
  $("#key-button").addEventListener("click", async () => { if (await askKey()) showPage(); });
  $("#new-chat").addEventListener("click", () => { if (!streaming) { newConversation(); renderChat(); $("#prompt").focus(); } });
  $("#export-chat").addEventListener("click", exportConversation);
  $("#chat-model").addEventListener("change", (e) => { current().model = e.target.value; saveConversations(); });
  for (const [id, key, parse] of [["#chat-temperature", "temperature", Number], ["#chat-max-tokens", "maxTokens", Number], ["#chat-system", "system", String]]) {
    $(id).addEventListener("change", (e) => { current()[key] = parse(e.target.value); saveConversations(); });
  }
  $("#composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const prompt = $("#prompt");
    const text = prompt.value;
    if (!text.trim() || streaming) return;
    prompt.value = "";
    sendMessage(text);
  });
  $("#prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("#composer").requestSubmit();
    }
  });
  $("#stop").addEventListener("click", () => streaming?.controller.abort());
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && streaming) streaming.controller.abort();
  });
  $("#pull-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const reference = $("#pull-ref").value.trim();
    if (reference) pullModel(reference);
  });
  $("#inspect-close").addEventListener("click", () => { $("#inspect-panel").hidden = true; });
  $("#mcp-refresh").addEventListener("click", loadMcp);
  $("#mcp-filter").addEventListener("input", renderTools);
  window.addEventListener("resize", redrawCharts);
  const shown = $("#metrics-window");
  shown.value = ["1", "5", "15"].includes(localStorage.getItem(METRICS_SHOWN_STORE)) ? localStorage.getItem(METRICS_SHOWN_STORE) : "15";
  shown.addEventListener("change", () => { localStorage.setItem(METRICS_SHOWN_STORE, shown.value); redrawCharts(); });
}

document.addEventListener("DOMContentLoaded", () => {
  wire();
  buildCharts();
  applyTheme();
  showPage();
  scrapeMetrics();
  setInterval(scrapeMetrics, METRICS_EVERY_MS);
});
