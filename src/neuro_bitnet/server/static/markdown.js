// A small, safe Markdown renderer for model answers: the text is HTML-escaped first, so the
// only markup in the output is the markup added here. Supports fenced code blocks (an unclosed
// fence, as while an answer streams, runs to the end), headings, lists, block quotes, rules,
// paragraphs, `code`, **bold**, *italic*, ~~strike~~, [links](https://...) and [n] citations.
"use strict";

(function () {
  const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

  function escapeHtml(text) {
    return text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
  }

  // Inline markup over already-escaped text. Code spans are cut out first so nothing inside
  // them is interpreted.
  function inline(escaped) {
    const parts = escaped.split(/(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/);
    let out = "";
    for (let i = 0; i < parts.length; i += 3) {
      out += spans(parts[i]);
      if (i + 2 < parts.length) out += "<code>" + parts[i + 2].trim() + "</code>";
    }
    return out;
  }

  function spans(text) {
    return text
      .replace(/\[([^\]\n]+)\]\((https?:\/\/[^\s)]+|mailto:[^\s)]+)\)/g,
        (_, label, url) => `<a href="${url}" rel="noopener noreferrer" target="_blank">${label}</a>`)
      .replace(/\*\*(?=\S)([\s\S]*?\S)\*\*/g, "<strong>$1</strong>")
      .replace(/(^|[^\w])__(?=\S)([\s\S]*?\S)__(?!\w)/g, "$1<strong>$2</strong>")
      .replace(/(^|[^*\w])\*(?=[^\s*])([^*\n]*?[^\s*])?\*(?!\*)/g, (m, pre, body) =>
        body === undefined ? m : `${pre}<em>${body}</em>`)
      .replace(/(^|[^\w])_(?=\S)([^_\n]*?\S)_(?!\w)/g, "$1<em>$2</em>")
      .replace(/~~(?=\S)([\s\S]*?\S)~~/g, "<del>$1</del>")
      .replace(/\[(\d{1,3})\](?!\()/g, '<span class="cite">[$1]</span>');
  }

  const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]{0,30})/;
  const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
  const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
  const BULLET = /^\s*[-*+]\s+(.*)$/;
  const NUMBERED = /^\s*(\d{1,9})[.)]\s+(.*)$/;
  const QUOTE = /^\s{0,3}&gt;\s?(.*)$/;

  function renderMarkdown(source) {
    const lines = escapeHtml(source.replace(/\r\n?/g, "\n")).split("\n");
    const out = [];
    let para = [];
    let list = null; // {tag, items}
    let quote = [];

    const flushPara = () => {
      if (para.length) out.push("<p>" + para.map(inline).join("<br>") + "</p>");
      para = [];
    };
    const flushList = () => {
      if (list) {
        const start = list.tag === "ol" && list.start !== 1 ? ` start="${list.start}"` : "";
        out.push(`<${list.tag}${start}>` + list.items.map((t) => "<li>" + inline(t) + "</li>").join("") + `</${list.tag}>`);
      }
      list = null;
    };
    const flushQuote = () => {
      if (quote.length) out.push("<blockquote>" + renderMarkdownEscaped(quote) + "</blockquote>");
      quote = [];
    };
    const flushAll = () => { flushPara(); flushList(); flushQuote(); };

    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      const fence = FENCE.exec(line);
      if (fence) {
        flushAll();
        const marker = fence[1];
        const body = [];
        i++;
        while (i < lines.length && !new RegExp("^\\s{0,3}" + marker[0] + "{" + marker.length + ",}\\s*$").test(lines[i])) {
          body.push(lines[i]);
          i++;
        }
        const lang = fence[2] ? ` class="language-${fence[2]}" data-lang="${fence[2]}"` : "";
        out.push(`<pre><code${lang}>` + body.join("\n") + "</code></pre>");
        continue;
      }
      const q = QUOTE.exec(line);
      if (q) { flushPara(); flushList(); quote.push(q[1]); continue; }
      flushQuote();
      if (!line.trim()) { flushPara(); flushList(); continue; }
      const h = HEADING.exec(line);
      if (h) {
        flushAll();
        const level = Math.min(h[1].length + 2, 6); // answers' headings sit under the page's own
        out.push(`<h${level}>` + inline(h[2]) + `</h${level}>`);
        continue;
      }
      if (RULE.test(line)) { flushAll(); out.push("<hr>"); continue; }
      const b = BULLET.exec(line);
      const n = b ? null : NUMBERED.exec(line);
      if (b || n) {
        flushPara();
        const tag = b ? "ul" : "ol";
        if (!list || list.tag !== tag) { flushList(); list = { tag, items: [], start: n ? Number(n[1]) : 1 }; }
        list.items.push(b ? b[1] : n[2]);
        continue;
      }
      if (list && /^\s+\S/.test(line)) { list.items[list.items.length - 1] += " " + line.trim(); continue; }
      flushList();
      para.push(line);
    }
    flushAll();
    return out.join("\n");
  }

  // Block quotes hold already-escaped lines; render them without escaping twice.
  function renderMarkdownEscaped(escapedLines) {
    const unescaped = escapedLines.join("\n").replace(/&(amp|lt|gt|quot|#39);/g,
      (m) => ({ "&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'" })[m]);
    return renderMarkdown(unescaped);
  }

  window.NeuroMarkdown = { render: renderMarkdown, escapeHtml };
})();
