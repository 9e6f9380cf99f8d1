// A small Markdown renderer for model answers, which are hostile input: it builds DOM nodes and sets
// only textContent, so no text from a model is ever parsed as HTML. Paragraphs, headings, fenced code
// (highlighted by a generic tokenizer), lists, block quotes, inline code, bold, italic and http(s) links.
"use strict";

const Markdown = (() => {
  const KEYWORDS = new Set(("as async await break case catch class const continue def del do elif else " +
    "enum except export extends false fn for from func function go if impl import in interface let " +
    "loop match mod mut new nil none null package pass pub raise return self static struct super " +
    "switch this throw true try type typeof use var void while with yield True False None").split(" "));

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Code highlighting: comments, strings, numbers and common keywords, for any C-like or Python-like
  // language. Each token becomes a span whose text is set as text.
  const TOKENS = "\"\"\"[\\s\\S]*?\"\"\"|'''[\\s\\S]*?'''|\\/\\*[\\s\\S]*?\\*\\/|\"(?:[^\"\\\\\\n]|\\\\.)*\"|'(?:[^'\\\\\\n]|\\\\.)*'|`(?:[^`\\\\]|\\\\.)*`|\\b\\d+(?:\\.\\d+)?\\b|\\b[A-Za-z_]\\w*\\b";
  const SLASH_TOKEN = new RegExp("(\\/\\/[^\\n]*|" + TOKENS + ")", "g");
  const HASH_TOKEN = new RegExp("(#[^\\n]*|" + TOKENS + ")", "g");
  function highlight(code, lang, target) {
    const hashComments = /^(py|python|sh|bash|shell|zsh|ruby|rb|yaml|yml|toml|r|perl|dockerfile|make)$/i.test(lang || "");
    let last = 0;
    for (const match of code.matchAll(hashComments ? HASH_TOKEN : SLASH_TOKEN)) {
      const token = match[0];
      let kind = null;
      if (token.startsWith("//") || token.startsWith("/*") || token.startsWith("#")) kind = "com";
      else if (/^["'`]/.test(token)) kind = "str";
      else if (/^\d/.test(token)) kind = "num";
      else if (KEYWORDS.has(token)) kind = "kw";
      if (match.index > last) target.append(document.createTextNode(code.slice(last, match.index)));
      if (kind) target.append(el("span", "tok-" + kind, token));
      else target.append(document.createTextNode(token));
      last = match.index + token.length;
    }
    if (last < code.length) target.append(document.createTextNode(code.slice(last)));
  }

  // Inline: `code`, **bold**, *italic* / _italic_, [text](http...) links; everything else is text.
  const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*([^*]+)\*\*|__([^_]+)__|\*([^*\s][^*]*)\*|\b_([^_\s][^_]*)_\b|\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g;
  function inline(text, target) {
    let last = 0;
    for (const m of text.matchAll(INLINE)) {
      if (m.index > last) target.append(document.createTextNode(text.slice(last, m.index)));
      if (m[1]) target.append(el("code", null, m[2]));
      else if (m[3] !== undefined || m[4] !== undefined) {
        const strong = el("strong");
        inline(m[3] ?? m[4], strong);
        target.append(strong);
      } else if (m[5] !== undefined || m[6] !== undefined) {
        const em = el("em");
        inline(m[5] ?? m[6], em);
        target.append(em);
      } else if (m[7] !== undefined) {
        const a = el("a", null, m[7]);
        a.href = m[8];
        a.rel = "noopener noreferrer nofollow";
        a.target = "_blank";
        target.append(a);
      }
      last = m.index + m[0].length;
    }
    if (last < text.length) target.append(document.createTextNode(text.slice(last)));
  }

  function appendLines(lines, target) {
    lines.forEach((line, i) => {
      if (i) target.append(el("br"));
      inline(line, target);
    });
  }

  // Renders `source` into a fresh element. An unclosed fence (an answer still streaming) is shown as
  // code up to the end.
  function render(source) {
    const root = el("div", "md");
    const lines = String(source).replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      const fence = line.match(/^\s*(```|~~~)\s*([\w+#.-]*)/);
      if (fence) {
        const body = [];
        i++;
        while (i < lines.length && !lines[i].trimStart().startsWith(fence[1])) body.push(lines[i++]);
        i++;
        const pre = el("pre");
        pre.tabIndex = 0; // a long line scrolls: the keyboard must reach it
        const code = el("code");
        if (fence[2]) code.dataset.lang = fence[2];
        highlight(body.join("\n"), fence[2], code);
        pre.append(code);
        root.append(pre);
        continue;
      }
      if (!line.trim()) { i++; continue; }
      const heading = line.match(/^(#{1,6})\s+(.*)$/);
      if (heading) {
        const h = el("h" + Math.min(4, heading[1].length + 1));
        inline(heading[2], h);
        root.append(h);
        i++;
        continue;
      }
      const item = /^\s*([-*+]|\d+[.)])\s+/;
      if (item.test(line)) {
        const ordered = /^\s*\d/.test(line);
        const list = el(ordered ? "ol" : "ul");
        while (i < lines.length && item.test(lines[i])) {
          const li = el("li");
          const parts = [lines[i].replace(item, "")];
          i++;
          // Continuation lines, indented, belong to the item.
          while (i < lines.length && /^\s{2,}\S/.test(lines[i]) && !item.test(lines[i])) parts.push(lines[i++].trim());
          appendLines(parts, li);
          list.append(li);
        }
        root.append(list);
        continue;
      }
      if (/^\s*>/.test(line)) {
        const quote = el("blockquote");
        const parts = [];
        while (i < lines.length && /^\s*>/.test(lines[i])) parts.push(lines[i++].replace(/^\s*>\s?/, ""));
        appendLines(parts, quote);
        root.append(quote);
        continue;
      }
      const para = [];
      while (i < lines.length && lines[i].trim() && !/^\s*(```|~~~|#{1,6}\s|>|[-*+]\s|\d+[.)]\s)/.test(lines[i])) para.push(lines[i++]);
      if (!para.length) para.push(lines[i++]);
      const p = el("p");
      appendLines(para, p);
      root.append(p);
    }
    return root;
  }

  return { render, highlight };
})();
