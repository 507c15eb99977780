// The trellis dashboard: sign-in over the REST API, then one WebSocket (`/ws/v1/client`, docs/client-protocol.md)
// with a subscription per panel. Plain ES2020, no dependencies. Everything the server sends is put into the
// page as text nodes (never as HTML).
"use strict";
(() => {
  const API = "/api/v1";
  const AUTH_KEY = "trellis.dashboard.auth";
  const TENANT_KEY = "trellis.dashboard.tenant";
  const OPEN_STATUSES = new Set(["new", "sent", "placed", "partially_filled"]);
  const MAX_FILLS = 200;
  const MAX_EVENTS = 100;
  const MAX_CURVE = 5000;
  const MAX_SUBSCRIPTIONS = 64;

  const $ = (id) => document.getElementById(id);

  // ---- DOM helpers (text only) -------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === "class") el.className = v;
        else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
        else el.setAttribute(k, v === true ? "" : String(v));
      }
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const SVG_NS = "http://www.w3.org/2000/svg";
  function s(tag, attrs, text) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    if (text !== undefined) el.textContent = String(text);
    return el;
  }

  // ---- formatting --------------------------------------------------------------------------------------
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  function fmtTime(ms, withMs) {
    if (ms === null || ms === undefined || !Number.isFinite(Number(ms))) return "–";
    const d = new Date(Number(ms));
    const t = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
    return withMs ? `${t}.${pad(d.getUTCMilliseconds(), 3)}` : t;
  }
  function fmtDateTime(ms) {
    if (ms === null || ms === undefined) return "–";
    const d = new Date(Number(ms));
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${fmtTime(ms)}`;
  }
  function fmtMoney(x) {
    if (x === null || x === undefined || x === "") return "–";
    const n = Number(x);
    if (!Number.isFinite(n)) return String(x);
    return n.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }
  const str = (x) => (x === null || x === undefined || x === "" ? "–" : String(x));
  const signClass = (x) => (Number(x) > 0 ? "up" : Number(x) < 0 ? "down" : "");
  function decimals(x) {
    const t = String(x);
    const i = t.indexOf(".");
    return i < 0 ? 0 : t.length - i - 1;
  }
  const humanize = (k) => String(k).replace(/_/g, " ");
  function fmtValue(v) {
    if (v === null || v === undefined) return "–";
    if (Array.isArray(v)) return v.length ? v.map(fmtValue).join(", ") : "–";
    if (typeof v === "object") return JSON.stringify(v);
    if (typeof v === "boolean") return v ? "yes" : "no";
    return String(v);
  }

  // ---- toasts ------------------------------------------------------------------------------------------
  function toast(kind, title, reason) {
    const box = $("toasts");
    const el = h("div", { class: `toast ${kind}`, "data-testid": "toast", "data-kind": kind, role: kind === "ok" ? "status" : "alert" },
      h("span", { class: "title" }, title),
      reason ? h("span", { class: "reason", "data-testid": "toast-reason" }, reason) : null);
    box.append(el);
    while (box.children.length > 5) box.firstElementChild.remove();
    setTimeout(() => el.remove(), kind === "ok" ? 5000 : 10000);
  }

  // ---- REST and tokens ---------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, body) {
      let message = `HTTP ${status}`;
      if (body && typeof body === "object") {
        if (typeof body.message === "string") message = body.message;
        else if (body.error && typeof body.error === "object" && body.error.message) message = String(body.error.message);
        else if (typeof body.error === "string") message = body.error;
      }
      super(message);
      this.status = status;
      this.code = body && typeof body.error === "string" ? body.error : null;
    }
  }

  let auth = loadAuth(); // {access, refresh, expiresAt}
  let refreshTimer = null;
  let refreshing = null;

  function loadAuth() {
    try {
      const a = JSON.parse(sessionStorage.getItem(AUTH_KEY) || "null");
      return a && a.access && a.refresh ? a : null;
    } catch (_) {
      return null;
    }
  }
  function setTokens(pair) {
    auth = {
      access: pair.access_token,
      refresh: pair.refresh_token,
      expiresAt: Date.now() + Math.max(10, Number(pair.expires_in) || 600) * 1000,
      lifetime: Math.max(10, Number(pair.expires_in) || 600) * 1000,
    };
    try { sessionStorage.setItem(AUTH_KEY, JSON.stringify(auth)); } catch (_) { /* private mode */ }
    scheduleRefresh();
  }
  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    if (!auth) return;
    const lifetime = auth.lifetime || 600000;
    const margin = Math.min(60000, lifetime * 0.2);
    const delay = Math.max(1000, auth.expiresAt - margin - Date.now());
    refreshTimer = setTimeout(() => refreshTokens().catch(() => {}), delay);
  }
  async function send(method, path, body, token) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    const res = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "omit", cache: "no-store",
    });
    let data = null;
    const text = await res.text();
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = null; }
    }
    if (!res.ok) throw new ApiError(res.status, data);
    return data;
  }
  // Refreshes the token pair once however many callers ask at the same time (the refresh token rotates).
  function refreshTokens() {
    if (!auth) return Promise.reject(new ApiError(401, { message: "not signed in" }));
    if (!refreshing) {
      const token = auth.refresh;
      refreshing = send("POST", `${API}/auth/refresh`, { refresh_token: token })
        .then((pair) => { setTokens(pair); })
        .catch((e) => {
          if (e instanceof ApiError && (e.status === 401 || e.status === 400 || e.status === 403)) {
            signOut("Your session ended: sign in again.");
          } else {
            clearTimeout(refreshTimer);
            refreshTimer = setTimeout(() => refreshTokens().catch(() => {}), 5000);
          }
          throw e;
        })
        .finally(() => { refreshing = null; });
    }
    return refreshing;
  }
  async function api(method, path, body) {
    if (!auth) throw new ApiError(401, { message: "not signed in" });
    if (auth.expiresAt - Date.now() < 5000) await refreshTokens();
    try {
      return await send(method, path, body, auth.access);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401 && auth) {
        await refreshTokens();
        return send(method, path, body, auth.access);
      }
      throw e;
    }
  }

  // ---- state ---------------------------------------------------------------------------------------------
  const S = {
    me: null,
    isAdmin: false,
    tenant: null,
    canTrade: false,
    symbols: [],
    pnl: null,
    curve: [],
    positions: new Map(),
    orders: new Map(),
    fills: new Map(),
    strategies: new Map(),
    risk: null,
    events: new Map(),
    quotes: new Map(),
    deployments: new Map(),
  };
  function resetState() {
    S.pnl = null;
    S.curve = [];
    S.positions.clear();
    S.orders.clear();
    S.fills.clear();
    S.strategies.clear();
    S.risk = null;
    S.events.clear();
    S.quotes.clear();
    S.deployments.clear();
    for (const id of ["positions-table", "orders-table", "fills-table", "strategies-table", "predictions-table", "quotes-table"]) {
      delete $(id).dataset.seq;
      const tb = $(id).tBodies[0];
      tb.replaceChildren();
      tb._rows = null;
      tb._rendered = false;
    }
    markAll();
  }

  // ---- rendering (batched) -------------------------------------------------------------------------------
  const dirty = new Set();
  let renderTimer = null;
  function mark(panel) {
    dirty.add(panel);
    if (!renderTimer) renderTimer = setTimeout(render, 80);
  }
  function markAll() {
    for (const p of ["pnl", "positions", "orders", "fills", "strategies", "risk", "supervision", "quotes", "predictions"]) mark(p);
  }
  function render() {
    renderTimer = null;
    const panels = [...dirty];
    dirty.clear();
    for (const p of panels) {
      try {
        RENDER[p]();
      } catch (e) {
        console.error(`rendering ${p}`, e);
      }
    }
  }

  // Keyed table rendering: rows whose data did not change are kept (and new ones briefly highlighted).
  function renderRows(table, items, keyOf, build, signature) {
    const tbody = table.tBodies[0];
    const old = tbody._rows || new Map();
    const next = new Map();
    const frag = document.createDocumentFragment();
    for (const it of items) {
      const key = keyOf(it);
      const sig = signature ? signature(it) : JSON.stringify(it);
      let tr = old.get(key);
      if (!tr || tr._sig !== sig) {
        const fresh = !old.has(key) && tbody._rendered;
        tr = build(it);
        tr._sig = sig;
        tr.dataset.key = key;
        if (fresh) {
          tr.classList.add("fresh");
          tr.addEventListener("animationend", () => tr.classList.remove("fresh"), { once: true });
        }
      }
      next.set(key, tr);
      frag.append(tr);
    }
    tbody.replaceChildren(frag);
    tbody._rows = next;
    tbody._rendered = true;
    setEmpty(table.id, items.length === 0);
  }
  function setEmpty(id, empty) {
    const p = document.querySelector(`[data-empty-for="${id}"]`);
    if (p) p.hidden = !empty;
  }
  const pill = (text, cls) => h("span", { class: `pill ${cls || ""}` }, str(text));

  const RENDER = {
    pnl() {
      const p = S.pnl || {};
      const set = (id, v) => {
        const el = $(id);
        el.textContent = fmtMoney(v);
        el.className = `value ${id === "pnl-equity" ? "" : signClass(v)}`;
      };
      set("pnl-equity", p.equity);
      set("pnl-realised", p.realised);
      set("pnl-unrealised", p.unrealised);
      set("pnl-commission", p.commission);
      drawChart();
    },
    positions() {
      const items = [...S.positions.values()].sort((a, b) => String(a.symbol).localeCompare(String(b.symbol)) || Number(a.account) - Number(b.account));
      renderRows($("positions-table"), items, posKey, (p) => h("tr", { "data-testid": "position-row", "data-symbol": p.symbol },
        h("td", { class: "mono" }, str(p.account)),
        h("td", null, str(p.symbol)),
        h("td", null, pill(p.side, p.side)),
        h("td", { class: "num" }, str(p.volume)),
        h("td", { class: "num" }, str(p.price_open))));
      $("positions-count").textContent = items.length ? `(${items.length})` : "";
      const seq = seqs.get("positions");
      if (seq !== null && seq !== undefined) $("positions-table").dataset.seq = String(seq);
    },
    orders() {
      const items = [...S.orders.values()].filter((o) => OPEN_STATUSES.has(o.status))
        .sort((a, b) => Number(b.created_ms || 0) - Number(a.created_ms || 0));
      const trade = S.canTrade;
      renderRows($("orders-table"), items, (o) => o.client_order_id, (o) => h("tr", { "data-testid": "order-row", "data-status": o.status },
        h("td", { class: "mono" }, str(o.client_order_id)),
        h("td", null, str(o.symbol)),
        h("td", null, pill(o.side, o.side)),
        h("td", { class: "num" }, `${str(o.filled_volume)}/${str(o.volume)}`),
        h("td", { class: "num" }, o.kind && o.kind !== "market" ? `${o.kind} ${str(o.price)}` : str(o.avg_price || o.kind)),
        h("td", null, humanize(str(o.status))),
        h("td", null, o.status === "placed" && String(o.client_order_id).startsWith("manual:")
          ? h("button", { type: "button", class: "small", "data-testid": "order-cancel", disabled: !trade, onclick: () => cancelOrder(o) }, "Cancel")
          : null)), (o) => JSON.stringify(o) + trade);
      $("orders-count").textContent = items.length ? `(${items.length})` : "";
    },
    fills() {
      const items = sortedFills();
      renderRows($("fills-table"), items, fillKey, (d) => {
        const f = d.fill || d;
        return h("tr", { "data-testid": "fill-row" },
          h("td", { class: "mono" }, fmtTime(f.time_msc, true)),
          h("td", { class: "mono" }, str(d.ticket !== undefined ? d.ticket : d.deal)),
          h("td", null, str(f.symbol)),
          h("td", null, pill(f.side, f.side)),
          h("td", null, humanize(str(f.entry))),
          h("td", { class: "num" }, str(f.volume)),
          h("td", { class: "num" }, str(f.price)),
          h("td", { class: "num" }, str(f.commission)),
          h("td", { class: "mono" }, str(d.client_order_id || d.order)));
      });
      $("fills-count").textContent = items.length ? `(${items.length})` : "";
      const seq = seqs.get("fills");
      if (seq !== null && seq !== undefined) $("fills-table").dataset.seq = String(seq);
    },
    strategies() {
      const items = [...S.strategies.values()].sort((a, b) => String(a.id).localeCompare(String(b.id)));
      const trade = S.canTrade;
      renderRows($("strategies-table"), items, (x) => x.id, (x) => {
        const running = x.running === true || x.state === "running" || x.state === "restarting";
        return h("tr", { "data-testid": "strategy-row", "data-strategy": x.id, "data-state": x.state },
          h("td", null, h("span", { class: "mono" }, str(x.id)), h("div", { class: "muted small" }, str(x.kind))),
          h("td", null, `${str(x.symbol)} ${x.timeframe ? String(x.timeframe) : ""}`),
          h("td", null, pill(x.state, x.state),
            x.warm_up === "warming" ? h("span", { class: "muted small", "data-testid": "strategy-warming", title: "replaying its warm-up bars: no live bar is traded before" }, " warming") : null),
          h("td", { class: "num" }, str(x.restarts)),
          h("td", { class: "wrap small" }, x.last_error ? String(x.last_error) : "–"),
          h("td", null, running
            ? h("button", { type: "button", class: "small", "data-testid": "strategy-stop", disabled: !trade, onclick: () => strategyCommand("strategy_stop", x.id) }, "Stop")
            : h("button", { type: "button", class: "small", "data-testid": "strategy-start", disabled: !trade, onclick: () => strategyCommand("strategy_start", x.id) }, "Start")));
      }, (x) => JSON.stringify(x) + trade);
    },
    risk() {
      const r = S.risk;
      const state = r && r.state ? r.state : null;
      const ks = state ? state.kill_switch : undefined;
      const badge = $("kill-switch-state");
      const on = !!ks;
      if (!state) {
        badge.textContent = "–";
        badge.dataset.state = "unknown";
      } else {
        badge.textContent = on ? "ON" : "OFF";
        badge.dataset.state = on ? "on" : "off";
      }
      $("kill-switch").disabled = !S.canTrade || !state;
      const release = $("kill-switch-release");
      release.hidden = !on;
      release.disabled = !S.canTrade;
      $("kill-switch-reason").textContent = on
        ? `${ks.automatic ? "Tripped automatically" : "Switched on"} at ${fmtDateTime(ks.at_ms)}${ks.reason ? ` — ${ks.reason}` : ""}`
        : "";
      const kv = (el, obj, skip) => {
        const rows = [];
        for (const [k, v] of Object.entries(obj || {})) {
          if (skip && skip.includes(k)) continue;
          if (v && typeof v === "object" && !Array.isArray(v)) continue; // nested settings: not a figure
          rows.push(h("dt", null, humanize(k)), h("dd", { "data-key": k }, fmtValue(v)));
        }
        el.replaceChildren(...rows);
      };
      kv($("risk-state"), state, ["kill_switch"]);
      kv($("risk-limits"), r ? r.limits : null);
    },
    supervision() {
      const items = [...S.events.values()].sort((a, b) => Number(b.seq) - Number(a.seq)).slice(0, MAX_EVENTS);
      $("supervision-list").replaceChildren(...items.map((e) => h("li", { "data-testid": "supervision-event" },
        h("span", { class: "when" }, fmtTime(e.at_ms)),
        h("span", { class: `kind ${String(e.kind)}` }, str(e.kind)),
        h("span", { class: "mono" }, str(e.child)),
        e.generation ? h("span", { class: "muted" }, ` #${e.generation}`) : null,
        e.reason ? h("div", { class: "muted small" }, String(e.reason)) : null)));
      setEmpty("supervision-list", items.length === 0);
    },
    quotes() {
      const symbols = [...new Set([...S.symbols, ...S.quotes.keys()])];
      const tbody = $("quotes-table").tBodies[0];
      const rows = tbody._rows || new Map();
      const next = new Map();
      const frag = document.createDocumentFragment();
      for (const sym of symbols) {
        let row = rows.get(sym);
        if (!row) {
          row = { tr: h("tr", { "data-testid": "quote-row", "data-symbol": sym }), cells: [] };
          row.cells = [h("td", null, sym), h("td", { class: "num" }), h("td", { class: "num" }), h("td", { class: "num" }), h("td", { class: "mono" })];
          row.tr.append(...row.cells);
        }
        const q = S.quotes.get(sym);
        if (q && q !== row.quote) {
          const prev = row.quote;
          const [, bid, ask, spread, time] = row.cells;
          bid.textContent = str(q.bid);
          ask.textContent = str(q.ask);
          const dp = Math.max(decimals(q.bid), decimals(q.ask));
          const sp = Number(q.ask) - Number(q.bid);
          spread.textContent = Number.isFinite(sp) ? sp.toFixed(dp) : "–";
          time.textContent = fmtTime(q.time_msc);
          if (prev && Number(prev.bid) !== Number(q.bid)) {
            const cls = Number(q.bid) > Number(prev.bid) ? "flash-up" : "flash-down";
            for (const c of [bid, ask]) {
              c.classList.remove("flash-up", "flash-down");
              void c.offsetWidth; // restart the animation
              c.classList.add(cls);
            }
          }
          row.quote = q;
        }
        next.set(sym, row);
        frag.append(row.tr);
      }
      tbody.replaceChildren(frag);
      tbody._rows = next;
    },
    predictions() {
      const items = [...S.deployments.values()].sort((a, b) => a.deployment.localeCompare(b.deployment));
      renderRows($("predictions-table"), items, (d) => d.deployment, (d) => {
        const p = d.last || {};
        const v = Number(p.value);
        return h("tr", { "data-testid": "prediction-row", "data-deployment": d.deployment },
          h("td", null, h("span", { class: "mono" }, d.deployment),
            h("div", { class: "muted small" }, `${str(p.symbol || d.symbol)}${p.bar_open_ms !== undefined ? ` bar ${fmtTime(p.bar_open_ms)}` : ""}${p.shadow ? " · shadow" : ""}`)),
          h("td", { class: `num ${signClass(v)}` }, Number.isFinite(v) ? (v > 0 ? "+" : "") + v.toPrecision(3) : "–"),
          h("td", { class: "num" }, str(p.latency_us)),
          h("td", { class: "num" }, String(d.count)));
      }, (d) => `${d.count}|${JSON.stringify(d.last)}`);
    },
  };

  // ---- the equity curve (inline SVG) -------------------------------------------------------------------------
  function drawChart() {
    const box = $("equity-chart");
    const w = Math.max(200, box.clientWidth || 600);
    const ht = Math.max(100, box.clientHeight || 190);
    const svg = s("svg", { viewBox: `0 0 ${w} ${ht}`, width: w, height: ht, role: "img", "aria-label": "equity curve" });
    const pts = S.curve;
    if (pts.length === 0) {
      svg.append(s("text", { x: w / 2, y: ht / 2, "text-anchor": "middle" }, "waiting for the equity curve…"));
      box.replaceChildren(svg);
      return;
    }
    // At most one point per two pixels; the last point always kept.
    const step = Math.max(1, Math.ceil(pts.length / (w / 2)));
    const sample = [];
    for (let i = 0; i < pts.length; i += step) sample.push(pts[i]);
    if (sample[sample.length - 1] !== pts[pts.length - 1]) sample.push(pts[pts.length - 1]);
    let lo = Infinity;
    let hi = -Infinity;
    for (const [, e] of sample) {
      if (e < lo) lo = e;
      if (e > hi) hi = e;
    }
    if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
    const padY = (hi - lo) * 0.08;
    lo -= padY;
    hi += padY;
    const labelWidth = Math.max(fmtMoney(lo).length, fmtMoney(hi).length) * 7 + 12;
    const left = 6;
    const right = w - labelWidth;
    const top = 8;
    const bottom = ht - 20;
    const t0 = sample[0][0];
    const t1 = sample[sample.length - 1][0];
    const x = (t) => (t1 === t0 ? right : left + ((t - t0) / (t1 - t0)) * (right - left));
    const y = (e) => bottom - ((e - lo) / (hi - lo)) * (bottom - top);
    for (let i = 0; i <= 3; i++) {
      const v = lo + ((hi - lo) * i) / 3;
      const yy = y(v);
      svg.append(s("line", { class: "grid-line", x1: left, x2: right, y1: yy, y2: yy }));
      svg.append(s("text", { x: right + 6, y: yy + 4 }, fmtMoney(v)));
    }
    let d = "";
    sample.forEach(([t, e], i) => { d += `${i ? "L" : "M"}${x(t).toFixed(1)},${y(e).toFixed(1)}`; });
    const area = `${d}L${x(t1).toFixed(1)},${bottom}L${x(t0).toFixed(1)},${bottom}Z`;
    svg.append(s("path", { class: "area", d: area }));
    svg.append(s("path", { class: "curve", d, "data-testid": "equity-curve", "data-points": pts.length }));
    svg.append(s("text", { x: left, y: ht - 4 }, fmtTime(t0)));
    svg.append(s("text", { x: right, y: ht - 4, "text-anchor": "end" }, fmtTime(t1)));
    box.replaceChildren(svg);
  }
  if (typeof ResizeObserver === "function") {
    new ResizeObserver(() => { if (!$("app-view").hidden) mark("pnl"); }).observe($("equity-chart"));
  }

  // ---- applying channel data ---------------------------------------------------------------------------------
  const posKey = (p) => `${p.account}|${p.symbol}`;
  const fillKey = (d) => `${d.account}|${d.ticket !== undefined ? d.ticket : d.deal}`;
  const fillTime = (d) => Number((d.fill || d).time_msc || 0);
  function sortedFills() {
    return [...S.fills.values()].sort((a, b) => fillTime(b) - fillTime(a) || Number(b.ticket || 0) - Number(a.ticket || 0));
  }
  const isZero = (v) => Number(v) === 0;

  function applyPnl(data, snapshot) {
    if (!data) return;
    S.pnl = data;
    if (snapshot) {
      S.curve = Array.isArray(data.curve)
        ? data.curve.map(([t, e]) => [Number(t), Number(e)]).filter(([t, e]) => Number.isFinite(t) && Number.isFinite(e))
        : [];
    }
    const t = Number(data.at_ms);
    const e = Number(data.equity);
    if (Number.isFinite(t) && Number.isFinite(e)) {
      const last = S.curve[S.curve.length - 1];
      if (!last || t > last[0]) S.curve.push([t, e]);
      else if (t === last[0]) last[1] = e;
      if (S.curve.length > MAX_CURVE) S.curve.splice(0, S.curve.length - MAX_CURVE);
    }
    mark("pnl");
  }
  function applyPosition(p) {
    if (!p || p.symbol === undefined) return;
    if (isZero(p.volume)) S.positions.delete(posKey(p));
    else S.positions.set(posKey(p), p);
  }
  function applyOrder(o) {
    if (o && o.client_order_id !== undefined) S.orders.set(o.client_order_id, o);
  }
  function trimOrders() {
    if (S.orders.size <= 500) return;
    const done = [...S.orders.values()].filter((o) => !OPEN_STATUSES.has(o.status))
      .sort((a, b) => Number(a.updated_ms || 0) - Number(b.updated_ms || 0));
    for (const o of done.slice(0, S.orders.size - 500)) S.orders.delete(o.client_order_id);
  }
  function trimFills() {
    if (S.fills.size <= MAX_FILLS) return;
    for (const d of sortedFills().slice(MAX_FILLS)) S.fills.delete(fillKey(d));
  }
  function applyEvent(e) {
    if (e && e.seq !== undefined) S.events.set(e.seq, e);
  }
  function trimEvents() {
    if (S.events.size <= MAX_EVENTS) return;
    const keys = [...S.events.keys()].sort((a, b) => Number(a) - Number(b));
    for (const k of keys.slice(0, keys.length - MAX_EVENTS)) S.events.delete(k);
  }

  function apply(channel, data, snapshot) {
    switch (channel) {
      case "pnl":
        applyPnl(data, snapshot);
        return;
      case "positions":
        if (snapshot) {
          S.positions.clear();
          for (const p of (data && data.positions) || []) applyPosition(p);
        } else applyPosition(data);
        mark("positions");
        return;
      case "orders":
        if (snapshot) {
          S.orders.clear();
          for (const o of (data && data.orders) || []) applyOrder(o);
        } else applyOrder(data);
        trimOrders();
        mark("orders");
        return;
      case "fills":
        if (snapshot) {
          S.fills.clear();
          for (const d of (data && data.fills) || []) S.fills.set(fillKey(d), d);
        } else if (data) S.fills.set(fillKey(data), data);
        trimFills();
        mark("fills");
        return;
      case "strategies":
        if (snapshot) {
          S.strategies.clear();
          for (const x of (data && data.strategies) || []) S.strategies.set(x.id, x);
        } else if (data && data.id !== undefined) S.strategies.set(data.id, data);
        mark("strategies");
        return;
      case "risk":
        S.risk = data;
        mark("risk");
        return;
      case "supervision":
        if (snapshot) {
          S.events.clear();
          for (const e of (data && data.events) || []) applyEvent(e);
        } else applyEvent(data);
        trimEvents();
        mark("supervision");
        return;
      default:
        break;
    }
    if (channel.startsWith("ticks:")) {
      const sym = channel.slice(6);
      if (data) S.quotes.set(sym, data);
      mark("quotes");
    } else if (channel.startsWith("predictions:")) {
      const id = channel.slice(12);
      const d = S.deployments.get(id) || { deployment: id, count: 0, last: null };
      if (snapshot) {
        const list = (data && data.predictions) || [];
        d.count = list.length;
        d.last = list.length ? list[list.length - 1] : null;
      } else if (data) {
        d.count += 1;
        d.last = data;
      }
      S.deployments.set(id, d);
      mark("predictions");
    }
  }

  // ---- the WebSocket -----------------------------------------------------------------------------------------
  let ws = null;
  let wsGen = 0;
  let wantConnected = false;
  let attempt = 0;
  let reconnectTimer = null;
  let pingTimer = null;
  let lastFrameAt = 0;
  let nextId = 0;
  const pending = new Map(); // command id -> {op, label, channels}
  const seqs = new Map(); // channel -> last seq; null while (re)subscribing
  let gaps = 0;
  let lastProblem = "";

  function setConn(state, detail) {
    const el = $("connection-state");
    el.dataset.state = state;
    el.textContent = state;
    el.title = detail || "";
  }

  async function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    if (!wantConnected || !auth) return;
    const gen = ++wsGen;
    setConn(attempt ? "reconnecting" : "connecting");
    let ticket;
    try {
      const res = await api("POST", `${API}/ws-tickets`, S.isAdmin ? { tenant: S.tenant } : {});
      ticket = res && res.ticket;
      if (!ticket) throw new Error("no ticket in the answer");
    } catch (e) {
      if (gen !== wsGen || !wantConnected) return;
      lastProblem = `ticket: ${e.message}`;
      setConn("reconnecting", lastProblem);
      if (e instanceof ApiError && e.status !== 401) toast("error", "Cannot connect", e.message);
      scheduleReconnect();
      return;
    }
    if (gen !== wsGen || !wantConnected) return;
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    let sock;
    try {
      sock = new WebSocket(`${proto}//${location.host}/ws/v1/client?ticket=${encodeURIComponent(ticket)}`);
    } catch (e) {
      lastProblem = e.message;
      setConn("reconnecting", lastProblem);
      scheduleReconnect();
      return;
    }
    ws = sock;
    seqs.clear();
    pending.clear();
    lastFrameAt = Date.now();
    sock.onmessage = (ev) => {
      if (ws !== sock) return;
      lastFrameAt = Date.now();
      onFrame(ev.data);
    };
    sock.onclose = (ev) => {
      if (ws !== sock) return;
      closed(ev.code, ev.reason);
    };
    sock.onerror = () => { /* the close event follows */ };
  }

  function closed(code, reason) {
    ws = null;
    seqs.clear();
    pending.clear();
    clearInterval(pingTimer);
    pingTimer = null;
    if (!wantConnected) return;
    lastProblem = `closed ${code}${reason ? `: ${reason}` : ""}`;
    setConn("reconnecting", lastProblem);
    if (code === 1008 && /expired/i.test(reason || "")) {
      // The access token behind the connection ran out: a fresh token, a fresh ticket, right away.
      refreshTokens().then(() => connect(), () => scheduleReconnect());
      return;
    }
    if (code === 4004 || code === 1008) toast("error", "Disconnected", reason || `close code ${code}`);
    scheduleReconnect();
  }

  function scheduleReconnect() {
    clearTimeout(reconnectTimer);
    if (!wantConnected) return;
    const base = Math.min(15000, 500 * 2 ** Math.min(attempt, 5));
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    attempt += 1;
    setConn("reconnecting", `${lastProblem ? `${lastProblem}; ` : ""}retrying in ${Math.ceil(delay / 1000)} s`);
    reconnectTimer = setTimeout(connect, delay);
  }

  function disconnect() {
    wantConnected = false;
    wsGen += 1;
    clearTimeout(reconnectTimer);
    clearInterval(pingTimer);
    pingTimer = null;
    const sock = ws;
    ws = null;
    if (sock) {
      try { sock.close(1000, "signed out"); } catch (_) { /* already closed */ }
    }
    seqs.clear();
    pending.clear();
    setConn("disconnected");
  }

  function command(op, fields, meta) {
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      if (meta && meta.label) toast("error", meta.label, "not connected");
      return null;
    }
    nextId = (nextId + 1) % 1e9;
    const id = `${op}-${nextId}`.slice(0, 64);
    ws.send(JSON.stringify({ op, id, ...fields }));
    pending.set(id, { op, ...(meta || {}) });
    return id;
  }

  function subscribe(channels) {
    for (const ch of channels) seqs.set(ch, null);
    command("subscribe", { channels }, { channels });
  }
  // A gap in a channel's seq: drop it and subscribe again for a fresh snapshot (docs/client-protocol.md).
  function resubscribe(channel) {
    gaps += 1;
    document.body.dataset.gaps = String(gaps);
    seqs.set(channel, null);
    command("unsubscribe", { channels: [channel] }, { channels: [channel], quiet: true });
    command("subscribe", { channels: [channel] }, { channels: [channel] });
  }

  function onWelcome(msg) {
    attempt = 0;
    lastProblem = "";
    S.canTrade = msg.can_trade === true;
    S.symbols = Array.isArray(msg.symbols) ? msg.symbols.map(String) : [];
    if (msg.tenant) {
      S.tenant = String(msg.tenant);
      if (!S.isAdmin) $("tenant-name").textContent = S.tenant;
    }
    setConn("connected", msg.actor ? `as ${msg.actor}` : "");
    const channels = ["risk", "pnl", "positions", "orders", "fills", "strategies", "supervision", ...S.symbols.map((x) => `ticks:${x}`)];
    subscribe(channels.slice(0, MAX_SUBSCRIPTIONS));
    markAll();
    clearInterval(pingTimer);
    const sock = ws;
    pingTimer = setInterval(() => {
      if (ws !== sock) return;
      if (Date.now() - lastFrameAt > 50000) {
        // Nothing heard for 50 s (not even a pong): the connection is dead without a close.
        sock.onclose = null;
        try { sock.close(4000, "no answer"); } catch (_) { /* ignore */ }
        closed(4000, "no answer from the server");
        return;
      }
      command("ping", {});
    }, 20000);
    loadDeployments(channels.length);
  }

  // Model deployments are optional: a tenant without models (or a tier without them) shows none.
  async function loadDeployments(used) {
    const sock = ws;
    let list = [];
    try {
      const res = await api("GET", `${API}/tenants/${encodeURIComponent(S.tenant)}/deployments`);
      const arr = (res && (res.models || res.deployments)) || [];
      list = arr.map((d) => (d && (d.deployment || d.id)) || null).filter((x) => typeof x === "string" && x);
      for (const d of arr) {
        const id = d && (d.deployment || d.id);
        if (id && !S.deployments.has(id)) S.deployments.set(id, { deployment: id, symbol: d.symbol, count: 0, last: null });
      }
    } catch (_) {
      list = [];
    }
    if (ws !== sock || !ws) return;
    const channels = list.map((id) => `predictions:${id}`).slice(0, Math.max(0, MAX_SUBSCRIPTIONS - used));
    // One subscribe per deployment: one refused does not take the others with it.
    for (const ch of channels) subscribe([ch]);
    mark("predictions");
  }

  function onFrame(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (_) {
      return;
    }
    if (!msg || typeof msg !== "object") return;
    switch (msg.type) {
      case "welcome":
        onWelcome(msg);
        break;
      case "snapshot": {
        const ch = msg.channel;
        if (!seqs.has(ch)) return; // not (or no longer) subscribed
        seqs.set(ch, Number(msg.seq));
        apply(ch, msg.data, true);
        break;
      }
      case "update": {
        const ch = msg.channel;
        const last = seqs.get(ch);
        if (last === null || last === undefined) return; // waiting for its snapshot
        if (Number(msg.seq) !== last + 1) {
          resubscribe(ch);
          return;
        }
        seqs.set(ch, last + 1);
        apply(ch, msg.data, false);
        break;
      }
      case "ack":
        onAck(msg);
        break;
      case "refused":
        onRefused(msg);
        break;
      case "error":
        if (msg.id) pending.delete(msg.id);
        toast("error", `Server error${msg.code ? ` (${msg.code})` : ""}`, msg.reason ? String(msg.reason) : "");
        break;
      case "pong":
        pending.delete(msg.id);
        break;
      default:
        break;
    }
  }

  function onAck(msg) {
    const p = pending.get(msg.id);
    pending.delete(msg.id);
    if (!p || !p.label) return;
    const r = msg.result || {};
    let detail = "";
    if (p.op === "kill_switch") {
      const ks = r.risk && r.risk.state ? r.risk.state.kill_switch : r.risk ? r.risk.kill_switch : undefined;
      detail = ks === undefined ? "" : ks ? "kill switch ON" : "kill switch OFF";
      if (r.risk && r.risk.state) {
        S.risk = r.risk;
        mark("risk");
      }
    } else if (r.strategy && typeof r.strategy === "object") {
      detail = `${str(r.strategy.id)}: ${str(r.strategy.state)}`;
    } else if (r.order && typeof r.order === "object") {
      detail = `${str(r.order.client_order_id)}: ${humanize(str(r.order.status))}`;
    }
    toast("ok", p.label, detail);
  }

  function onRefused(msg) {
    const p = pending.get(msg.id);
    pending.delete(msg.id);
    const reason = `${msg.code ? `${msg.code}: ` : ""}${msg.reason ? String(msg.reason) : "refused"}`;
    if (p && p.op === "subscribe") {
      const chans = p.channels || [];
      if (chans.length > 1) {
        // One bad channel refuses the lot: subscribe one by one so the others still come.
        for (const ch of chans) subscribe([ch]);
        return;
      }
      for (const ch of chans) {
        seqs.delete(ch);
        if (ch.startsWith("predictions:")) {
          S.deployments.delete(ch.slice(12));
          mark("predictions");
          return; // optional
        }
      }
      toast("refused", `Subscription to ${chans.join(", ")} refused`, reason);
      return;
    }
    if (p && p.quiet) return;
    toast("refused", `${p && p.label ? p.label : msg.op || "command"} refused`, reason);
  }

  // ---- commands from the page --------------------------------------------------------------------------------
  function cancelOrder(o) {
    // Only manual orders can be cancelled; they are recorded as `manual:<id>` and the command takes the id
    // as given to place_order.
    const id = String(o.client_order_id).replace(/^manual:/, "");
    command("cancel_order", { client_order_id: id }, { label: `Cancel ${id}` });
  }
  function strategyCommand(op, id) {
    command(op, { strategy: id }, { label: `${op === "strategy_start" ? "Start" : "Stop"} ${id}` });
  }

  let confirmAction = null;
  function openConfirm(title, text, label, action) {
    $("kill-switch-title").textContent = title;
    $("kill-switch-dialog").querySelector("p").textContent = text;
    $("kill-switch-confirm").textContent = label;
    confirmAction = action;
    $("kill-switch-dialog").hidden = false;
    $("kill-switch-cancel").focus();
  }
  function closeConfirm() {
    $("kill-switch-dialog").hidden = true;
    confirmAction = null;
  }
  $("kill-switch").addEventListener("click", () => openConfirm(
    "Turn the kill switch on?",
    "Every new order of this tenant will be refused and every open position closed at market.",
    "Kill and flatten",
    () => command("kill_switch", { on: true, flatten: true, reason: "kill switch pressed on the dashboard" }, { label: "Kill switch" }),
  ));
  $("kill-switch-release").addEventListener("click", () => openConfirm(
    "Release the kill switch?",
    "Strategies and manual orders will be able to trade again.",
    "Release",
    () => command("kill_switch", { on: false, reason: "released on the dashboard" }, { label: "Kill switch release" }),
  ));
  $("kill-switch-confirm").addEventListener("click", () => {
    const action = confirmAction;
    closeConfirm();
    if (action) action();
  });
  $("kill-switch-cancel").addEventListener("click", closeConfirm);
  $("kill-switch-dialog").addEventListener("click", (e) => { if (e.target === $("kill-switch-dialog")) closeConfirm(); });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !$("kill-switch-dialog").hidden) closeConfirm(); });

  // ---- sign-in, session, tenant ----------------------------------------------------------------------------
  function showLogin(message) {
    $("app-view").hidden = true;
    $("login-view").hidden = false;
    const err = $("login-error");
    err.textContent = message || "";
    err.hidden = !message;
    $("login-submit").disabled = false;
    $("login-email").focus();
  }

  function signOut(message) {
    const token = auth && auth.access;
    disconnect();
    clearTimeout(refreshTimer);
    auth = null;
    try { sessionStorage.removeItem(AUTH_KEY); } catch (_) { /* ignore */ }
    if (token && !message) send("POST", `${API}/auth/logout`, {}, token).catch(() => {});
    S.me = null;
    resetState();
    closeConfirm();
    showLogin(message);
  }

  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const email = $("login-email").value.trim();
    const password = $("login-password").value;
    if (!email || !password) {
      showLogin("Enter your email and password.");
      return;
    }
    $("login-submit").disabled = true;
    $("login-error").hidden = true;
    try {
      const pair = await send("POST", `${API}/auth/login`, { email, password });
      setTokens(pair);
      $("login-password").value = "";
      await start();
    } catch (err) {
      const message = err instanceof ApiError ? err.message : `Cannot reach trellis: ${err.message}`;
      if (auth) signOut(message);
      else showLogin(message);
    } finally {
      $("login-submit").disabled = false;
    }
  });

  $("sign-out").addEventListener("click", () => signOut());

  $("tenant-select").addEventListener("change", () => {
    const t = $("tenant-select").value;
    if (!t || t === S.tenant) return;
    S.tenant = t;
    try { sessionStorage.setItem(TENANT_KEY, t); } catch (_) { /* ignore */ }
    disconnect();
    resetState();
    wantConnected = true;
    attempt = 0;
    connect();
  });

  async function start() {
    const me = await api("GET", `${API}/me`);
    S.me = me;
    S.isAdmin = !me.tenant_id;
    $("user-name").textContent = `${me.email || me.key_id || "api key"}${me.role ? ` (${humanize(me.role)})` : ""}`;
    const select = $("tenant-select");
    if (S.isAdmin) {
      const res = await api("GET", `${API}/tenants`);
      const tenants = (res && res.tenants) || [];
      if (!tenants.length) throw new ApiError(404, { message: "no tenant to show: create one first" });
      let remembered = null;
      try { remembered = sessionStorage.getItem(TENANT_KEY); } catch (_) { /* ignore */ }
      select.replaceChildren(...tenants.map((t) => h("option", { value: t.id }, t.name && t.name !== t.id ? `${t.id} — ${t.name}` : String(t.id))));
      S.tenant = tenants.some((t) => t.id === remembered) ? remembered : String(tenants[0].id);
      select.value = S.tenant;
      select.hidden = false;
      $("tenant-name").textContent = "";
    } else {
      select.hidden = true;
      S.tenant = String(me.tenant_id);
      $("tenant-name").textContent = S.tenant;
    }
    resetState();
    $("login-view").hidden = true;
    $("app-view").hidden = false;
    wantConnected = true;
    attempt = 0;
    connect();
  }

  // ---- boot ----------------------------------------------------------------------------------------------------
  if (auth) {
    scheduleRefresh();
    start().catch((e) => signOut(e instanceof ApiError && e.status === 401 ? "Your session ended: sign in again." : `Cannot load the dashboard: ${e.message}`));
  } else {
    showLogin();
  }
})();
