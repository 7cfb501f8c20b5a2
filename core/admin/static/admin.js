// The llm-proxy dashboard: plain DOM, no framework, no build step, no third-party code.
// Every value from the server goes into the page as text (textContent), never as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
let csrf = "";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

async function api(method, path, body) {
  const headers = { "accept": "application/json" };
  if (method !== "GET") headers["x-csrf-token"] = csrf;
  if (body !== undefined) headers["content-type"] = "application/json";
  const reply = await fetch("/admin/api/" + path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (reply.status === 401) { location.href = "/admin/sign-in"; throw new Error("signed out"); }
  const data = await reply.json().catch(() => ({}));
  if (!reply.ok) throw new Error((data.error && data.error.message) || "HTTP " + reply.status);
  return data;
}

function toast(text, bad) {
  const node = document.getElementById("toast");
  node.textContent = text;
  node.className = bad ? "toast bad" : "toast";
  node.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { node.hidden = true; }, 3500);
}

async function attempt(work) {
  try { await work(); } catch (err) { if (err.message !== "signed out") toast(err.message, true); }
}

async function copy(text, what) {
  try { await navigator.clipboard.writeText(text); toast((what || "Text") + " copied"); }
  catch (err) { toast("Copy failed: select the text and copy it by hand", true); }
}

const fmt = {
  int: (n) => Number(n || 0).toLocaleString("en-US"),
  usd: (n) => "$" + Number(n || 0).toFixed(Number(n) >= 100 ? 2 : 4),
  ms: (n) => (Number(n) >= 1000 ? (Number(n) / 1000).toFixed(2) + " s" : Math.round(Number(n || 0)) + " ms"),
  when: (s) => (s ? new Date(s * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC" : "never"),
  // Axis labels: as few characters as say the amount.
  usdAxis: (n) => "$" + (Number(n) > 0 && Number(n) < 0.01 ? Number(n).toPrecision(2) : Number(n) >= 10 ? Math.round(n) : Number(n) >= 1 ? Number(n).toFixed(1).replace(/\.0$/, "") : Number(n).toFixed(2).replace(/\.?0+$/, "") || "0"),
  short: (n) => {
    n = Number(n || 0);
    if (n >= 1e6) return (n / 1e6).toFixed(n >= 1e7 ? 0 : 1) + "M";
    if (n >= 1e3) return (n / 1e3).toFixed(n >= 1e4 ? 0 : 1) + "k";
    return String(Math.round(n * 100) / 100);
  },
};

function daysAgo(days) {
  const d = new Date(Date.now() - days * 86400000);
  return d.toISOString().slice(0, 10);
}

// ---- charts: small SVG drawings of our own ------------------------------------------------

function niceMax(value) {
  if (value <= 0) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

// Vertical bars per day; `series` = [{key, cls, label}] stacked bottom to top.
function dayChart(rows, series, format, id, axisFormat) {
  axisFormat = axisFormat || format;
  const W = 560, H = 220, left = 48, bottom = 24, top = 10;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", id });
  const totals = rows.map((r) => series.reduce((sum, s) => sum + Number(r[s.key] || 0), 0));
  const max = niceMax(Math.max(0, ...totals));
  const plotH = H - bottom - top, plotW = W - left - 8;
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    chart.append(svg("line", { x1: left, x2: W - 8, y1: y, y2: y, class: "axis" }));
    chart.append(svg("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, axisFormat((max * i) / 4)));
  }
  const slot = plotW / Math.max(rows.length, 1);
  const barW = Math.max(2, Math.min(36, slot * 0.7));
  rows.forEach((row, i) => {
    let y = top + plotH;
    const x = left + slot * i + (slot - barW) / 2;
    for (const s of series) {
      const h = (plotH * Number(row[s.key] || 0)) / max;
      if (h > 0) {
        const rect = svg("rect", { x, y: y - h, width: barW, height: h, class: s.cls, "data-day": row.key });
        rect.append(svg("title", {}, `${row.key} ${s.label}: ${format(row[s.key])}`));
        chart.append(rect);
        y -= h;
      }
    }
    const every = Math.ceil(rows.length / 8);
    if (i % every === 0) {
      chart.append(svg("text", { x: x + barW / 2, y: H - 8, "text-anchor": "middle" }, row.key.slice(5)));
    }
  });
  if (!rows.length) chart.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no usage yet"));
  return chart;
}

// Horizontal bars, one per caller or model, largest first.
function rankChart(rows, key, cls, format, id) {
  const shown = rows.slice().sort((a, b) => Number(b[key] || 0) - Number(a[key] || 0)).slice(0, 10);
  const W = 560, row = 26, left = 170, H = Math.max(1, shown.length) * row + 8;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", id });
  const max = Math.max(0, ...shown.map((r) => Number(r[key] || 0))) || 1;
  shown.forEach((r, i) => {
    const y = 4 + i * row;
    const name = (r.key || "(unknown)").length > 26 ? r.key.slice(0, 25) + "…" : r.key || "(unknown)";
    chart.append(svg("text", { x: left - 8, y: y + 16, "text-anchor": "end", class: "label" }, name));
    const w = ((W - left - 70) * Number(r[key] || 0)) / max;
    const rect = svg("rect", { x: left, y: y + 4, width: Math.max(w, 1), height: row - 10, rx: 2, class: cls });
    rect.append(svg("title", {}, `${r.key}: ${format(r[key])}`));
    chart.append(rect);
    chart.append(svg("text", { x: left + Math.max(w, 1) + 6, y: y + 16 }, format(r[key])));
  });
  if (!shown.length) chart.append(svg("text", { x: W / 2, y: 18, "text-anchor": "middle" }, "no usage yet"));
  return chart;
}

function legend(items) {
  return el("div", { class: "legend" }, items.map(([cls, text]) => el("span", {}, el("i", { class: cls }), text)));
}

// ---- pages ---------------------------------------------------------------------------------

const pages = {};

pages.tokens = async (view) => {
  const [routes, listing] = await Promise.all([api("GET", "routes"), api("GET", "tokens")]);
  const names = [...new Set(routes.routes.map((r) => r.name))].sort();
  const created = el("div", { id: "new-token" });
  const form = el("form", { class: "row", id: "create-token" },
    el("div", {}, el("label", { for: "label", text: "Label (who it is for)" }),
      el("input", { id: "label", name: "label", required: true, maxlength: 200, placeholder: "mobile-app" })),
    el("div", {}, el("label", { for: "providers", text: "Providers (empty: all)" }),
      el("input", { id: "providers", name: "providers", placeholder: names.join(","), list: "provider-names" }),
      el("datalist", { id: "provider-names" }, names.map((n) => el("option", { value: n })))),
    el("div", {}, el("label", { for: "models", text: "Models (empty: all)" }),
      el("input", { id: "models", name: "models", placeholder: "gpt-4o*,claude-*" })),
    el("div", {}, el("label", { for: "expires", text: "Expires" }),
      el("select", { id: "expires", name: "expires" },
        ["never", "1d", "7d", "30d", "90d", "365d"].map((v) => el("option", { value: v, text: v })))),
    el("div", {}, el("label", { for: "budget", text: "Budget USD" }),
      el("input", { id: "budget", name: "budget", type: "number", min: "0", step: "0.01", placeholder: "none" })),
    el("button", { type: "submit", class: "primary", id: "create" }, "Create token"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    attempt(async () => {
      const budget = form.budget.value.trim();
      const split = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);
      const made = await api("POST", "tokens", {
        label: form.label.value,
        providers: split(form.providers.value),
        models: split(form.models.value),
        expires_at: form.expires.value,
        budget_usd: budget === "" ? null : Number(budget),
      });
      form.reset();
      created.replaceChildren(el("div", { class: "card" },
        el("h2", {}, `Token for ${made.label} (${made.id})`),
        el("p", { class: "muted" }, "Shown only now: copy it to where the caller keeps secrets. The proxy keeps only its hash."),
        el("div", { class: "secret" }, el("code", { id: "token-value" }, made.token),
          el("button", { id: "copy-token", on: { click: () => copy(made.token, "Token") } }, "Copy"))));
      await renderList();
    });
  });

  const table = el("div", { id: "token-list" });
  async function renderList(data) {
    data = data || (await api("GET", "tokens"));
    if (!data.tokens.length) {
      table.replaceChildren(el("p", { class: "empty" }, "No per-caller tokens yet."));
      return;
    }
    const rows = data.tokens.map((t) => {
      const action = (label, cls, work) => el("button", { class: cls, "data-action": label.toLowerCase(), on: { click: () => attempt(work) } }, label);
      return el("tr", { "data-id": t.id, "data-label": t.label },
        el("td", {}, el("b", {}, t.label), el("div", { class: "muted mono" }, t.id)),
        el("td", {}, el("span", { class: "pill " + t.status }, t.status)),
        el("td", {}, t.providers.join(", ") || "all", el("div", { class: "muted" }, t.models.join(", ") || "all models")),
        el("td", {}, fmt.when(t.expires_at)),
        el("td", {}, fmt.when(t.last_used)),
        el("td", { class: "num usage" }, fmt.int(t.usage.requests) + " req", el("div", { class: "muted" }, fmt.short(t.usage.total_tokens) + " tok · " + fmt.usd(t.usage.cost_usd))),
        el("td", { class: "num" }, t.budget_usd === null ? "none" : "$" + Number(t.budget_usd).toFixed(2)),
        el("td", { class: "actions" },
          t.status === "disabled"
            ? action("Enable", "", async () => { await api("POST", `tokens/${t.id}/enable`); toast(`${t.label} enabled`); await renderList(); })
            : action("Disable", "", async () => { await api("POST", `tokens/${t.id}/disable`); toast(`${t.label} disabled`); await renderList(); }),
          action("Revoke", "danger", async () => {
            if (!confirm(`Revoke ${t.label} for good? Callers using it get 401 within seconds.`)) return;
            await api("DELETE", `tokens/${t.id}`);
            toast(`${t.label} revoked`);
            await renderList();
          })));
    });
    table.replaceChildren(el("table", {},
      el("thead", {}, el("tr", {}, ["Token", "Status", "Scope", "Expires", "Last used", `Usage since ${data.since}`, "Budget", ""].map((h, i) => el("th", { class: i === 5 || i === 6 ? "num" : null }, h)))),
      el("tbody", {}, rows)));
  }
  view.replaceChildren(
    el("h1", {}, "Tokens"),
    el("div", { class: "card" }, el("h2", {}, "Create a token"), form), created,
    el("div", { class: "card" }, el("h2", {}, "Tokens"), table));
  await renderList(listing);
};

pages.usage = async (view) => {
  const range = new URLSearchParams(location.search).get("days") || "30";
  const since = daysAgo(Number(range) - 1);
  const [days, callers, models, latest] = await Promise.all([
    ...["day", "caller", "model"].map((by) => api("GET", `usage?by=${by}&since=${since}`)),
    api("GET", "requests?limit=1")]);
  // Every day in the range, zeros included, so gaps show as gaps.
  const byDay = Object.fromEntries(days.rows.map((r) => [r.key, r]));
  const series = [];
  for (let i = Number(range) - 1; i >= 0; i--) {
    const key = daysAgo(i);
    series.push(byDay[key] || { key, input_tokens: 0, output_tokens: 0, cost_usd: 0, requests: 0 });
  }
  const t = days.total;
  const tabs = el("div", { class: "tabs" }, ["7", "30", "90"].map((d) =>
    el("button", { class: d === range ? "on" : null, on: { click: () => { history.replaceState(null, "", `?days=${d}`); render(); } } }, `${d} days`)));
  const table = (rows, by) => el("table", {},
    el("thead", {}, el("tr", {}, [by, "Requests", "Input", "Output", "Cached", "Saved", "Cost"].map((h, i) => el("th", { class: i ? "num" : null }, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, el("td", {}, r.key || "(unknown)"),
      [r.requests, r.input_tokens, r.output_tokens, r.cached_input_tokens, r.saved_tokens].map((n) => el("td", { class: "num" }, fmt.int(n))),
      el("td", { class: "num" }, fmt.usd(r.cost_usd))))));
  view.replaceChildren(
    el("h1", {}, "Usage ", el("span", { class: "muted" }, `since ${since} (UTC)`)), tabs,
    el("div", { class: "card totals", id: "usage-totals" },
      el("div", {}, el("b", {}, fmt.int(t.requests)), "requests"),
      el("div", {}, el("b", {}, fmt.short(t.total_tokens)), "tokens"),
      el("div", {}, el("b", {}, fmt.usd(t.cost_usd)), "cost"),
      el("div", {}, el("b", {}, fmt.short(t.saved_tokens)), "tokens saved by the cache")),
    percentileCard(latest.figures, "usage-percentiles"),
    el("div", { class: "grid2" },
      el("div", { class: "card" }, el("h2", {}, "Tokens per day"), legend([["input", "input"], ["output", "output"]]),
        dayChart(series, [{ key: "input_tokens", cls: "input", label: "input" }, { key: "output_tokens", cls: "output", label: "output" }], fmt.short, "chart-day-tokens")),
      el("div", { class: "card" }, el("h2", {}, "Cost per day"), legend([["cost", "USD"]]),
        dayChart(series, [{ key: "cost_usd", cls: "cost", label: "cost" }], fmt.usd, "chart-day-cost", fmt.usdAxis)),
      el("div", { class: "card" }, el("h2", {}, "Tokens per caller"), rankChart(callers.rows, "total_tokens", "input", fmt.short, "chart-callers")),
      el("div", { class: "card" }, el("h2", {}, "Tokens per model"), rankChart(models.rows, "total_tokens", "output", fmt.short, "chart-models"))),
    el("div", { class: "card" }, el("h2", {}, "Per caller"), table(callers.rows, "Caller")),
    el("div", { class: "card" }, el("h2", {}, "Per model"), table(models.rows, "Model")));
};

// Latency and time-to-first-byte percentiles of the latest requests (the ledger's request log).
function percentileCard(figures, id) {
  const cell = (label, values) => el("div", {}, el("b", {}, values && values.p50 !== undefined ? `${fmt.ms(values.p50)} / ${fmt.ms(values.p90)} / ${fmt.ms(values.p99)}` : "–"), label);
  return el("div", { class: "card totals", id },
    el("div", {}, el("b", {}, fmt.int(figures.requests)), "latest requests"),
    cell("latency p50 / p90 / p99", figures.latency_ms),
    cell("first byte p50 / p90 / p99", figures.first_byte_ms));
}

let requestsTimer = null;

pages.requests = async (view) => {
  const params = new URLSearchParams(location.search);
  const filters = { caller: params.get("caller") || "", model: params.get("model") || "", status: params.get("status") || "" };
  const choices = (name, options) => [el("option", { value: "", text: "all" }),
    ...[...new Set(filters[name] ? [...options, filters[name]] : options)].map((o) => el("option", { value: o, text: o, selected: o === filters[name] }))];
  const select = (name, label, options) => el("div", {}, el("label", { for: "f-" + name, text: label }),
    el("select", { id: "f-" + name, name, on: { change: (event) => { filters[name] = event.target.value; apply(); } } }, choices(name, options)));
  const live = el("input", { id: "live", type: "checkbox", checked: true, style: "width:auto" });
  // Built once: a live refresh only changes the caller and model lists, never the controls.
  const head = el("div", { id: "request-filters", class: "inline" },
    select("caller", "Caller", []), select("model", "Model", []),
    select("status", "Status", ["2xx", "4xx", "5xx", "401", "403", "429", "rate_limit_exceeded", "insufficient_quota"]),
    el("div", {}, el("label", { for: "live", text: "Refresh live" }), live));
  const figures = el("div", { id: "request-figures" });
  const table = el("div", { id: "request-list" });
  const shown = { caller: "", model: "" };
  function apply() {
    const query = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
    history.replaceState(null, "", "?" + query.toString());
    load();
  }
  async function load() {
    const query = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
    query.set("limit", "200");
    const data = await api("GET", "requests?" + query.toString());
    for (const [name, options] of [["caller", data.callers], ["model", data.models]]) {
      const key = options.join("\n");
      if (shown[name] !== key) { shown[name] = key; head.querySelector("#f-" + name).replaceChildren(...choices(name, options)); }
    }
    figures.replaceChildren(percentileCard(data.figures, "request-percentiles"));
    if (!data.requests.length) {
      table.replaceChildren(el("p", { class: "empty" }, "No requests yet."));
      return;
    }
    table.replaceChildren(el("table", {},
      el("thead", {}, el("tr", {}, ["Time (UTC)", "Caller", "Provider", "Model", "Status", "Latency", "First byte", "Tokens in / out", "Cost", "Cache"].map((h, i) => el("th", { class: i >= 5 && i <= 8 ? "num" : null }, h)))),
      el("tbody", {}, data.requests.map((r) => el("tr", { "data-request-id": r.request_id, class: r.status >= 400 ? "failed" : null },
        el("td", { class: "mono", title: r.request_id }, new Date(r.at * 1000).toISOString().slice(5, 19).replace("T", " ")),
        el("td", {}, r.caller || "–"),
        el("td", {}, r.provider),
        el("td", {}, r.model || "–"),
        el("td", {}, el("span", { class: "pill " + (r.status >= 400 ? "disabled" : "active") }, r.refusal ? `${r.status} ${r.refusal}` : String(r.status))),
        el("td", { class: "num" }, fmt.ms(r.latency_ms)),
        el("td", { class: "num" }, r.first_byte_ms === null ? "–" : fmt.ms(r.first_byte_ms)),
        el("td", { class: "num" }, r.input_tokens === null ? "–" : `${fmt.int(r.input_tokens)} / ${fmt.int(r.output_tokens)}`),
        el("td", { class: "num" }, r.cost_usd === null ? "–" : fmt.usd(r.cost_usd)),
        el("td", {}, r.cache || "–"))))));
  }
  view.replaceChildren(el("h1", {}, "Requests ", el("span", { class: "muted" }, "the latest, newest first")),
    el("div", { class: "card" }, head), figures, el("div", { class: "card" }, table));
  await load();
  clearInterval(requestsTimer);
  // Live: read again every few seconds while this page is shown and the box is ticked.
  requestsTimer = setInterval(() => {
    if (document.body.dataset.ready !== "requests" || !document.getElementById("live")) { clearInterval(requestsTimer); return; }
    if (document.getElementById("live").checked && !document.hidden) attempt(load);
  }, 3000);
};

pages.providers = async (view) => {
  const data = await api("GET", "providers");
  view.replaceChildren(el("h1", {}, "Providers"),
    el("div", { class: "card" },
      el("p", { class: "muted" }, "Routes switched on by this deployment's key variables. Keys show their last four characters only; “today” counts replies the usage ledger metered since 00:00 UTC."),
      el("table", { id: "provider-list" },
        el("thead", {}, el("tr", {}, ["Route", "Upstream", "Key sent as", "Keys", "Metered today"].map((h, i) => el("th", { class: i === 4 ? "num" : null }, h)))),
        el("tbody", {}, data.providers.map((p) => el("tr", {},
          el("td", {}, el("b", {}, p.prefix), el("div", { class: "muted" }, p.name)),
          el("td", { class: "mono" }, p.upstream),
          el("td", { class: "mono" }, p.key_header),
          el("td", { class: "mono" }, p.keys.join("  ") || "none"),
          el("td", { class: "num" }, fmt.int(p.requests_today))))))));
};

pages.status = async (view) => {
  const status = await api("GET", "status");
  const windows = status.windows.slice();
  const list = el("ul", { class: "windows", id: "windows" });
  function drawWindows() {
    list.replaceChildren(...(windows.length ? windows.map((w, i) => el("li", {},
      w.nightly ? `every night ${w.nightly} UTC` : `from ${w.from} to ${w.to}`,
      w.note ? el("span", { class: "muted" }, ` (${w.note})`) : null, " ",
      el("button", { class: "link", on: { click: () => { windows.splice(i, 1); drawWindows(); } } }, "remove")))
      : [el("li", { class: "muted" }, "No scheduled windows.")]));
  }
  drawWindows();
  const online = status.online;
  const button = el("button", { id: "toggle-online", class: "big " + (online ? "danger" : "primary"),
    on: { click: () => attempt(async () => {
      if (online && !confirm("Switch the proxy off? Every proxy route answers 503 until it is switched on.")) return;
      await api("PUT", "status", { online: !online });
      toast(online ? "Switched off" : "Switched on");
      await render();
    }) } }, online ? "Switch off" : "Switch on");
  const nightly = el("div", { class: "inline" },
    el("div", {}, el("label", { for: "n-from", text: "Every night from (UTC)" }), el("input", { id: "n-from", type: "time", value: "22:00" })),
    el("div", {}, el("label", { for: "n-to", text: "to" }), el("input", { id: "n-to", type: "time", value: "06:00" })),
    el("div", {}, el("label", { for: "n-note", text: "Note" }), el("input", { id: "n-note", placeholder: "maintenance" })),
    el("button", { id: "add-nightly", on: { click: () => {
      windows.push({ nightly: `${view.querySelector("#n-from").value}-${view.querySelector("#n-to").value}`, note: view.querySelector("#n-note").value });
      drawWindows();
    } } }, "Add"));
  const once = el("div", { class: "inline" },
    el("div", {}, el("label", { for: "a-from", text: "Once, from (UTC)" }), el("input", { id: "a-from", type: "datetime-local" })),
    el("div", {}, el("label", { for: "a-to", text: "to" }), el("input", { id: "a-to", type: "datetime-local" })),
    el("div", {}, el("label", { for: "a-note", text: "Note" }), el("input", { id: "a-note", placeholder: "holiday" })),
    el("button", { id: "add-once", on: { click: () => {
      const from = view.querySelector("#a-from").value, to = view.querySelector("#a-to").value;
      if (!from || !to) { toast("Pick both times", true); return; }
      windows.push({ from: from + ":00Z", to: to + ":00Z", note: view.querySelector("#a-note").value });
      drawWindows();
    } } }, "Add"));
  view.replaceChildren(el("h1", {}, "Kill switch and schedule"),
    el("div", { class: "card switch" },
      el("span", { class: "state " + (online ? "online" : "offline"), id: "switch-state" }, online ? "Online" : "Switched off"),
      button,
      el("span", { class: "muted" }, status.offline_reason || "Serving requests. Every instance follows a change within TOKEN_CACHE_SECONDS.")),
    el("div", { class: "card" }, el("h2", {}, "Offline windows"),
      el("p", { class: "muted" }, "While a window is on, every proxy route answers 503 in the caller's own error shape; /health and this dashboard keep working."),
      list, nightly, once,
      el("p", {}, el("button", { class: "primary", id: "save-schedule", on: { click: () => attempt(async () => {
        await api("PUT", "schedule", { windows: windows.map((w) => Object.fromEntries(Object.entries(w).filter(([, v]) => v))) });
        toast("Schedule saved");
        await render();
      }) } }, "Save schedule"))));
};

const SNIPPETS = {
  "openai": (base) => `from openai import OpenAI\n\nclient = OpenAI(base_url="${base}", api_key="<your proxy token>")\nreply = client.chat.completions.create(\n    model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]\n)\nprint(reply.choices[0].message.content)`,
  "anthropic": (base) => `import anthropic\n\nclient = anthropic.Anthropic(base_url="${base}", api_key="<your proxy token>")\nreply = client.messages.create(\n    model="claude-3-5-haiku-latest", max_tokens=256,\n    messages=[{"role": "user", "content": "Hello"}],\n)\nprint(reply.content[0].text)`,
  "google-genai": (base) => `from google import genai\nfrom google.genai import types\n\nclient = genai.Client(\n    api_key="<your proxy token>", http_options=types.HttpOptions(base_url="${base}")\n)\nreply = client.models.generate_content(model="gemini-2.0-flash", contents="Hello")\nprint(reply.text)`,
  "azure-openai": (base) => `from openai import AzureOpenAI\n\nclient = AzureOpenAI(azure_endpoint="${base}", api_key="<your proxy token>", api_version="2024-10-21")`,
};

pages.routes = async (view) => {
  const data = await api("GET", "routes");
  const origin = location.origin;
  const chosen = data.routes.find((r) => r.name === "openai") || data.routes[0];
  const snippets = el("div", { id: "snippets" });
  function show(route) {
    const base = origin + route.base_path;
    const bySdk = route.sdk === "openai" ? ["openai"] : [route.sdk];
    const first = data.routes.find((r) => r.sdk === "anthropic");
    const gemini = data.routes.find((r) => r.sdk === "google-genai");
    const examples = [[route.sdk, base]];
    if (!bySdk.includes("anthropic") && first) examples.push(["anthropic", origin + first.base_path]);
    if (!bySdk.includes("google-genai") && gemini) examples.push(["google-genai", origin + gemini.base_path]);
    snippets.replaceChildren(...examples.map(([sdk, url]) => {
      const code = SNIPPETS[sdk](url);
      return el("div", { class: "snippet" }, el("b", {}, sdk), el("pre", {}, el("code", {}, code)),
        el("button", { on: { click: () => copy(code, "Snippet") } }, "Copy"));
    }));
  }
  view.replaceChildren(el("h1", {}, "Routes"),
    el("div", { class: "card" },
      el("p", { class: "muted" }, "Point an SDK at the base URL and give it a proxy token as its key; nothing else changes."),
      el("table", { id: "route-list" },
        el("thead", {}, el("tr", {}, ["Route", "Provider", "SDK", "Base URL", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, data.routes.map((r) => el("tr", {},
          el("td", { class: "mono" }, r.prefix), el("td", {}, r.name), el("td", {}, r.sdk),
          el("td", { class: "mono" }, origin + r.base_path),
          el("td", { class: "actions" },
            el("button", { on: { click: () => copy(origin + r.base_path, "Base URL") } }, "Copy"),
            el("button", { on: { click: () => show(r) } }, "Snippet"))))))),
    el("div", { class: "card" }, el("h2", {}, "Copy-paste snippets"), snippets));
  if (chosen) show(chosen);
};

async function render() {
  const page = location.pathname.replace(/^\/admin\/?/, "").split("/")[0] || "tokens";
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === page);
  const view = document.getElementById("view");
  await attempt(async () => {
    const status = await api("GET", "status");
    const pill = document.getElementById("service");
    pill.textContent = status.offline_reason ? "offline" : "online";
    pill.className = "pill " + (status.offline_reason ? "offline" : "online");
    pill.title = status.offline_reason || "serving requests";
    await (pages[page] || pages.tokens)(view);
    document.body.dataset.ready = page;
  });
}

document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("sign-out").addEventListener("click", () => attempt(async () => {
    await fetch("/admin/sign-out", { method: "POST", headers: { "x-csrf-token": csrf }, credentials: "same-origin" });
    location.href = "/admin/sign-in";
  }));
  await attempt(async () => { csrf = (await api("GET", "session")).csrf; });
  await render();
});
