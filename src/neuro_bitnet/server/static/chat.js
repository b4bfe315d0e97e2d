// The chat page of `neuro serve`: streams answers from /v1/chat/completions (same origin,
// relative URLs, JSON bodies), optional grounding on /v1/search, and the API key when needed.
"use strict";

(function () {
  const KEY_STORAGE = "neuro-bitnet.api-key";
  const SOURCE_BUDGET_TOKENS = 1024; // like `neuro ask --storage`: retrieved text at most
  const CHARS_PER_TOKEN = 3;         // the conservative estimate of retrieval/grounding.py
  const SEARCH_TOP_K = 4;

  const $ = (id) => document.getElementById(id);
  const ui = {
    log: $("log"), empty: $("empty"), info: $("model-info"), form: $("composer"), prompt: $("prompt"),
    send: $("send"), stop: $("stop"), newChat: $("new-chat"), docsToggle: $("docs-toggle"),
    useDocs: $("use-docs"), translate: $("translate"), status: $("status"),
    temperature: $("temperature"), maxTokens: $("max-tokens"),
    keyDialog: $("key-dialog"), keyForm: $("key-form"), keyInput: $("key-input"), keyError: $("key-error"),
  };
  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
  const GROUNDING = meta("neuro-grounding");
  const AUTH_REQUIRED = meta("neuro-auth-required") === "true";

  const state = {
    history: [],        // [{role, content}] as sent to the model (questions without their sources)
    controller: null,   // the AbortController of the answer in flight
    ctxSize: null,
    generation: 0,      // bumped by "New chat" so a late answer does not land in the new one
  };

  // -- the API key ------------------------------------------------------------------------------
  let keyWaiters = [];

  function storedKey() {
    try { return localStorage.getItem(KEY_STORAGE) || ""; } catch (e) { return ""; }
  }

  function askForKey(message) {
    ui.keyError.textContent = message || "";
    ui.keyInput.value = "";
    if (!ui.keyDialog.open) ui.keyDialog.showModal();
    ui.keyInput.focus();
    return new Promise((resolve) => keyWaiters.push(resolve));
  }

  ui.keyForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = ui.keyInput.value.trim();
    if (!key) return;
    const res = await fetch("health", { headers: { Authorization: "Bearer " + key }, cache: "no-store" });
    if (res.status === 401) {
      ui.keyError.textContent = "The server refused that key; try again.";
      ui.keyInput.select();
      return;
    }
    try { localStorage.setItem(KEY_STORAGE, key); } catch (e) { /* private mode: kept for this page only */ }
    state.key = key;
    ui.keyDialog.close();
    const waiters = keyWaiters;
    keyWaiters = [];
    waiters.forEach((resolve) => resolve());
    ui.prompt.focus();
  });
  ui.keyDialog.addEventListener("cancel", (event) => event.preventDefault()); // the page needs it

  // fetch() with the key; a 401 asks for the key (again) and retries.
  async function api(path, options = {}) {
    if (AUTH_REQUIRED && !state.key) await askForKey();
    for (;;) {
      const headers = Object.assign({}, options.headers);
      if (options.body !== undefined) headers["Content-Type"] = "application/json";
      if (state.key) headers.Authorization = "Bearer " + state.key;
      const res = await fetch(path, Object.assign({}, options, { headers, cache: "no-store" }));
      if (res.status !== 401) return res;
      await askForKey(state.key ? "The server refused the stored key; enter it again." : "");
    }
  }

  async function errorMessage(res) {
    try {
      const body = await res.json();
      if (body && body.error) return { message: body.error.message, code: body.error.code };
    } catch (e) { /* not JSON */ }
    return { message: `HTTP ${res.status} ${res.statusText}`, code: null };
  }

  // -- the conversation view ------------------------------------------------------------------
  function announce(text) { ui.status.textContent = text; }

  function addTurn(role) {
    ui.empty.hidden = true;
    const article = document.createElement("article");
    article.className = "turn " + role;
    const label = document.createElement("h2");
    label.className = "visually-hidden";
    label.textContent = role === "user" ? "You said" : "Answer";
    const body = document.createElement("div");
    body.className = "body";
    article.append(label, body);
    ui.log.append(article);
    scrollToEnd();
    return article;
  }

  function scrollToEnd() {
    ui.log.scrollTop = ui.log.scrollHeight;
  }

  function renderAnswer(article, text) {
    const body = article.querySelector(".body");
    body.innerHTML = window.NeuroMarkdown.render(text);
    if (navigator.clipboard) {
      body.querySelectorAll("pre").forEach((pre) => {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "copy";
        button.textContent = "Copy";
        button.setAttribute("aria-label", "Copy code");
        button.addEventListener("click", () => {
          navigator.clipboard.writeText(pre.querySelector("code").textContent)
            .then(() => { button.textContent = "Copied"; }, () => { button.textContent = "Copy failed"; });
        });
        pre.prepend(button);
      });
    }
  }

  function addFooter(article, className, text) {
    const p = document.createElement("p");
    p.className = className;
    p.textContent = text;
    article.append(p);
    return p;
  }

  function showSources(article, sources) {
    const details = document.createElement("details");
    details.className = "sources";
    details.open = true;
    const summary = document.createElement("summary");
    summary.textContent = sources.length === 1 ? "1 source" : `${sources.length} sources`;
    const list = document.createElement("ol");
    for (const s of sources) {
      const li = document.createElement("li");
      li.value = s.n;
      const where = document.createElement("span");
      where.className = "where";
      where.textContent = sourceName(s);
      const excerpt = document.createElement("span");
      excerpt.className = "excerpt";
      excerpt.textContent = s.text.length > 240 ? s.text.slice(0, 240).trimEnd() + " …" : s.text;
      li.append(where, excerpt);
      list.append(li);
    }
    details.append(summary, list);
    article.append(details);
  }

  function seconds(ms) { return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s"; }

  function statsText(t) {
    const parts = [];
    if (t.usage) {
      const n = t.usage.completion_tokens;
      parts.push(`${n} token${n === 1 ? "" : "s"}`);
      const rate = t.timings && t.timings.predicted_per_second; // the engine's own clock
      if (rate) parts.push(`${rate.toFixed(1)} tokens/s`);
    }
    if (t.first !== null) parts.push(`first token ${seconds(t.first - t.start)}`);
    if (t.usage) parts.push(`prompt ${t.usage.prompt_tokens} tokens`);
    else if (t.end !== null) parts.push(`after ${seconds(t.end - t.start)}`);
    return parts.join(" · ");
  }

  // -- grounding ---------------------------------------------------------------------------------
  function sourceName(s) {
    return `[${s.n}] ${s.path}` + (s.location ? ` (${s.location})` : "");
  }

  // Number the hits and keep what fits in the budget (best first), like fit_sources().
  function fitSources(hits) {
    let room = SOURCE_BUDGET_TOKENS * CHARS_PER_TOKEN;
    if (state.ctxSize) room = Math.min(room, Math.floor(state.ctxSize / 4) * CHARS_PER_TOKEN);
    const kept = [];
    for (const hit of hits) {
      const source = { n: kept.length + 1, path: hit.path, location: hit.location, text: hit.text };
      const cost = sourceName(source).length + 1 + source.text.length + 2;
      if (cost <= room) { kept.push(source); room -= cost; continue; }
      const left = room - sourceName(source).length - 4;
      if (left >= 120) {
        source.text = source.text.slice(0, left).replace(/\s+\S*$/, "") + " …";
        kept.push(source);
      }
      break;
    }
    return kept;
  }

  // The question as `neuro ask --storage` asks it (answering.prepare_ask).
  function groundedQuestion(question, sources) {
    const block = sources.map((s) => `${sourceName(s)}\n${s.text}`).join("\n\n");
    return `${GROUNDING}\n\nSources:\n${block}\n\nQuestion: ${question}`;
  }

  async function retrieve(question, signal) {
    const res = await api("v1/search", { method: "POST", body: JSON.stringify({ query: question, top_k: SEARCH_TOP_K }), signal });
    if (!res.ok) throw new Error("search failed: " + (await errorMessage(res)).message);
    return fitSources((await res.json()).data);
  }

  // The settings' values for the request body; an out-of-range value is reported, not sent.
  function settings() {
    const out = {};
    const temperature = ui.temperature.valueAsNumber;
    if (!Number.isNaN(temperature)) {
      if (temperature < 0 || temperature > 2) throw new Error("Temperature must be between 0 and 2.");
      out.temperature = temperature;
    }
    const maxTokens = ui.maxTokens.valueAsNumber;
    if (!Number.isNaN(maxTokens)) {
      if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new Error("Answer length must be a whole number of tokens.");
      out.max_tokens = maxTokens;
    }
    return out;
  }

  // -- streaming an answer -----------------------------------------------------------------------
  async function* sseEvents(res) {
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }

  function setBusy(busy) {
    ui.send.hidden = busy;
    ui.stop.hidden = !busy;
    ui.log.setAttribute("aria-busy", busy ? "true" : "false");
    if (busy) ui.stop.focus();
    else if (document.activeElement === ui.stop || document.activeElement === document.body) ui.prompt.focus();
  }

  async function ask(question) {
    const generation = state.generation;
    const userTurn = addTurn("user");
    userTurn.querySelector(".body").textContent = question;
    const answer = addTurn("assistant");
    answer.dataset.state = "waiting";
    answer.setAttribute("aria-busy", "true");
    const controller = new AbortController();
    state.controller = controller;
    setBusy(true);
    announce("Answering…");

    const t = { start: performance.now(), first: null, end: null, usage: null, timings: null };
    let text = "";
    let finish = null;
    let dropped = 0;
    let pending = false;
    const paint = () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => { pending = false; renderAnswer(answer, text); scrollToEnd(); });
    };
    try {
      const chosen = settings();
      let content = question;
      if (ui.useDocs.checked && !ui.docsToggle.hidden) {
        const sources = await retrieve(question, controller.signal);
        if (sources.length) {
          content = groundedQuestion(question, sources);
          showSources(answer, sources);
        } else {
          addFooter(answer, "note", "No matching passages in the index; answering without sources.");
        }
      }
      let res;
      for (;;) {
        const messages = state.history.concat([{ role: "user", content }]);
        res = await api("v1/chat/completions", {
          method: "POST",
          body: JSON.stringify(Object.assign({
            model: "default", messages, stream: true, stream_options: { include_usage: true },
            translate: ui.translate.checked,
          }, chosen)),
          signal: controller.signal,
        });
        if (res.ok) break;
        const error = await errorMessage(res);
        if (error.code === "context_length_exceeded" && state.history.length >= 2) {
          state.history.splice(0, 2); // drop the oldest exchange and try again
          dropped++;
          continue;
        }
        throw new Error(error.message);
      }
      answer.dataset.state = "streaming";
      for await (const chunk of sseEvents(res)) {
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) t.usage = chunk.usage;
        if (chunk.timings) t.timings = chunk.timings;
        const choice = chunk.choices && chunk.choices[0];
        if (!choice) continue;
        const piece = choice.delta && choice.delta.content;
        if (piece) {
          if (t.first === null) t.first = performance.now();
          text += piece;
          paint();
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
      t.end = performance.now();
      answer.dataset.state = "done";
      if (finish) answer.dataset.finish = finish;
      announce("Answer complete.");
    } catch (err) {
      t.end = performance.now();
      if (controller.signal.aborted) {
        answer.dataset.state = "stopped";
        announce("Stopped.");
      } else {
        answer.dataset.state = "error";
        addFooter(answer, "error", err.message || String(err)).setAttribute("role", "alert");
      }
    } finally {
      if (state.controller === controller) state.controller = null;
      answer.setAttribute("aria-busy", "false");
      renderAnswer(answer, text);
      if (generation === state.generation) setBusy(false);
    }
    if (generation !== state.generation) return;
    if (text || answer.dataset.state === "done") {
      state.history.push({ role: "user", content: question }, { role: "assistant", content: text });
    }
    if (t.usage) {
      answer.dataset.promptTokens = t.usage.prompt_tokens;
      answer.dataset.completionTokens = t.usage.completion_tokens;
    }
    const parts = [statsText(t)];
    if (answer.dataset.state === "stopped") parts.unshift("stopped");
    if (finish === "length") parts.push("cut at the token limit");
    if (dropped) parts.push(`oldest ${dropped === 1 ? "exchange" : dropped + " exchanges"} dropped to fit the context`);
    const stats = parts.filter(Boolean).join(" · ");
    if (stats) addFooter(answer, "stats", stats);
    scrollToEnd();
  }

  // -- controls ----------------------------------------------------------------------------------
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const question = ui.prompt.value.trim();
    if (!question || state.controller) return;
    ui.prompt.value = "";
    autoGrow();
    ask(question);
  });

  ui.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.form.requestSubmit();
    }
  });

  function autoGrow() {
    ui.prompt.style.height = "auto";
    ui.prompt.style.height = Math.min(ui.prompt.scrollHeight + 2, 240) + "px";
    ui.prompt.style.overflowY = ui.prompt.scrollHeight + 2 > 240 ? "auto" : "hidden";
  }
  ui.prompt.addEventListener("input", autoGrow);

  ui.stop.addEventListener("click", () => { if (state.controller) state.controller.abort(); });

  ui.newChat.addEventListener("click", () => {
    state.generation++;
    if (state.controller) state.controller.abort();
    state.controller = null;
    state.history = [];
    ui.log.querySelectorAll(".turn").forEach((el) => el.remove());
    ui.empty.hidden = false;
    setBusy(false);
    announce("New chat.");
    ui.prompt.focus();
  });

  // -- start -------------------------------------------------------------------------------------
  async function start() {
    state.key = storedKey();
    const res = await api("health");
    if (!res.ok) {
      ui.info.textContent = "server error: " + (await errorMessage(res)).message;
      return;
    }
    const health = await res.json();
    state.ctxSize = health.ctx_size;
    ui.info.textContent = `${health.model} · context ${health.ctx_size.toLocaleString("en")} tokens`;
    document.title = `${health.model} · neuro-bitnet`;
    ui.translate.checked = Boolean(health.auto_translate);
    if (health.search) {
      ui.docsToggle.hidden = false;
      ui.useDocs.checked = true;
    }
    document.body.dataset.ready = "true";
  }

  ui.prompt.focus();
  start().catch((err) => { ui.info.textContent = "cannot reach the server: " + err.message; });
})();
