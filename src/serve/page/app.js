// colo serve's live status page: fetches /api/status (every live daemon's
// `colo status` object and its checkpoint history) every second and draws
// each VM. Plain browser JavaScript, no library, no build step. Every number
// shown sits in an element with data-field="NAME" and its raw value in
// data-value, inside the VM's <section data-vm="NAME">: tests read them there.
"use strict";

const POLL_MS = 1000;
/** The chart: the last 5 minutes in 10-second bins. */
const CHART_SECONDS = 300;
const BIN_SECONDS = 10;
const RECENT_ROWS = 10;
const SVG_NS = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  for (const c of children) if (c !== undefined && c !== null) e.append(c instanceof Node ? c : String(c));
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

/** A shown value: its text, and the raw value in data-value. */
function field(name, value, text, cls) {
  return el("span", { "data-field": name, "data-value": value === undefined ? "" : value, class: cls }, text === undefined ? (value === undefined ? "–" : String(value)) : text);
}

function obj(v) {
  return v && typeof v === "object" && !Array.isArray(v) ? v : undefined;
}

function ms(v) {
  return typeof v === "number" ? `${v} ms` : "–";
}

function bytes(n) {
  if (typeof n !== "number") return "–";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function pairs(list) {
  const dl = el("dl");
  for (const [label, value] of list) dl.append(el("dt", {}, label), el("dd", {}, value));
  return dl;
}

/** Checkpoints per second over the last minute of the history. */
function lastMinute(history) {
  const n = history.filter((p) => p.secondsAgo <= 60).length;
  return { n, rate: (n / 60).toFixed(2) };
}

function chart(history) {
  const bins = CHART_SECONDS / BIN_SECONDS;
  const counts = new Array(bins).fill(0);
  const pauses = new Array(bins).fill(undefined);
  let shown = 0;
  for (const p of history) {
    if (p.secondsAgo > CHART_SECONDS) continue;
    const i = Math.min(bins - 1, bins - 1 - Math.floor(p.secondsAgo / BIN_SECONDS));
    counts[i]++;
    // Checkpoint 0 is the live migration's last round, not a pause like the others (as in the metrics).
    if (p.reason !== "initial") pauses[i] = Math.max(pauses[i] ?? 0, p.pauseMs);
    shown++;
  }
  const W = 600, H = 110, top = 14, bottom = 16, plot = H - top - bottom, bw = W / bins;
  const maxRate = Math.max(...counts) / BIN_SECONDS;
  const maxPause = Math.max(0, ...pauses.filter((p) => p !== undefined));
  const s = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", "data-field": "chart", "data-value": shown, role: "img" });
  s.append(svg("line", { class: "axis", x1: 0, y1: top + plot, x2: W, y2: top + plot }));
  counts.forEach((c, i) => {
    if (c === 0) return;
    const h = (c / BIN_SECONDS / maxRate) * plot;
    s.append(svg("rect", { class: "bar", x: i * bw + 1, y: top + plot - h, width: bw - 2, height: h }));
  });
  if (maxPause > 0) {
    // The max pause of each bin that had a checkpoint, joined.
    const at = pauses.flatMap((p, i) => (p === undefined ? [] : [[i * bw + bw / 2, top + plot - (p / maxPause) * plot]]));
    s.append(svg("polyline", { class: "pause", points: at.map(([x, y]) => `${x},${y}`).join(" ") }));
    for (const [x, y] of at) s.append(svg("circle", { class: "pause-dot", cx: x, cy: y, r: 2.5 }));
  }
  const label = (x, y, text, anchor) => {
    const t = svg("text", { x, y, "text-anchor": anchor || "start" });
    t.textContent = text;
    s.append(t);
  };
  label(0, 10, `${maxRate.toFixed(1)} checkpoints/s`);
  label(W, 10, `max pause ${maxPause} ms`, "end");
  label(0, H - 3, `${CHART_SECONDS / 60} min ago`);
  label(W, H - 3, "now", "end");
  return s;
}

function recentTable(recent) {
  const rows = recent.slice(-RECENT_ROWS).reverse();
  if (rows.length === 0) return el("p", { class: "muted" }, "no checkpoint yet");
  const table = el("table", { "data-field": "recent-checkpoints" }, el("tr", {}, el("th", {}, "#"), el("th", {}, "reason"), el("th", {}, "pause"), el("th", {}, "pages"), el("th", {}, "diverging flow"), el("th", {}, "at")));
  for (const r of rows) {
    const d = obj(r.divergence);
    const place = d ? (typeof d.offset === "number" ? `seq+${d.offset}` : typeof d.seq === "number" ? `seq ${d.seq}` : "") : "";
    table.append(
      el(
        "tr",
        { "data-checkpoint": r.checkpoint },
        el("td", { class: "num" }, field("checkpoint", r.checkpoint)),
        el("td", {}, field("reason", r.reason, r.reason || "(applied)")),
        el("td", { class: "num" }, field("pause-ms", r.pauseMs, ms(r.pauseMs))),
        el("td", { class: "num" }, field("pages", r.pages)),
        el("td", { class: "flow", title: d ? d.detail : "" }, d ? field("flow", d.flow, d.flow || d.detail) : "", d && place ? " " : "", d && place ? field(typeof d.offset === "number" ? "offset" : "seq", typeof d.offset === "number" ? d.offset : d.seq, `at ${place}`) : ""),
        el("td", { class: "muted" }, typeof r.at === "string" ? r.at.slice(11, 23) : ""),
      ),
    );
  }
  return table;
}

function failoverList(failovers) {
  if (!Array.isArray(failovers) || failovers.length === 0) return el("p", { class: "muted", "data-field": "failovers", "data-value": 0 }, "none");
  const ul = el("ul", { "data-field": "failovers", "data-value": failovers.length });
  for (const f of [...failovers].reverse()) ul.append(el("li", { "data-field": "failover" }, `${f.at} ${f.role}: ${f.reason}`));
  return ul;
}

function vmCard(vm) {
  const section = el("section", { class: "vm", "data-vm": vm.name, id: `vm-${vm.name}` });
  const st = obj(vm.status);
  section.append(el("h2", {}, vm.name, " ", el("span", { class: "muted" }, `pid ${vm.pid}`)));
  if (!st) {
    section.append(el("p", { class: "error", "data-field": "error" }, vm.error || "no answer"));
    return section;
  }
  const r = obj(st.replication);
  const lease = r && obj(r.lease);
  const held = obj(st.heldOutput);
  const loop = obj(st.eventLoopDelay);
  const mode = r ? r.mode : "unprotected";
  const history = Array.isArray(vm.history) ? vm.history : [];
  const minute = lastMinute(history);
  section.append(
    pairs([
      ["mode", field("mode", mode, undefined, `mode-${mode}`)],
      ["state", field("state", st.state)],
      ["peer", field("peer", r ? r.peer : undefined)],
      ["replication", field("replication", r ? r.replication : undefined)],
      ["peer heard", field("ms-since-heard", r ? r.msSinceHeard : undefined, r ? `${r.msSinceHeard} ms ago` : "–")],
      ["engine", field("engine", st.engine)],
      ["lease", lease ? field("lease-held", lease.held, lease.held ? (lease.solo ? "held (solo)" : "held") : "not held", lease.held ? "held" : "not-held") : field("lease-held", undefined, "no arbiter")],
      ["lease left", field("lease-valid-ms", lease ? lease.validForMs : undefined, lease ? ms(lease.validForMs) : "–")],
      ["checkpoints", field("checkpoints", r ? r.checkpoints : undefined)],
      ["rate (1 min)", el("span", {}, field("rate", minute.rate, `${minute.rate}/s`), " ", field("checkpoints-last-minute", minute.n, `(${minute.n})`, "muted"))],
      ["last pause", field("last-pause-ms", r ? r.lastPauseMs : undefined, r ? ms(r.lastPauseMs) : "–")],
      ["p99 pause", field("p99-pause-ms", r ? r.p99PauseMs : undefined, r ? ms(r.p99PauseMs) : "–")],
      ["held frames", field("held-frames", held ? held.heldFrames : undefined)],
      ["held bytes", field("held-bytes", held ? held.heldBytes : undefined, held ? bytes(held.heldBytes) : "–")],
      ["loop delay max", field("loop-delay-max-ms", loop ? loop.maxMs : undefined, loop ? ms(loop.maxMs) : "–")],
      ["failovers", field("failover-count", r && Array.isArray(r.failovers) ? r.failovers.length : 0)],
    ]),
  );
  if (!r) return section;
  section.append(
    el("h3", {}, "checkpoints ", el("span", { class: "legend" }, el("span", { class: "rate" }, "■ per second"), " ", el("span", { class: "pause" }, "— max pause"), ` (${BIN_SECONDS} s bins)`)),
    chart(history),
  );
  const reasons = obj(r.checkpointReasons);
  if (reasons) {
    const list = el("p", { "data-field": "reasons" });
    for (const [k, n] of Object.entries(reasons)) if (n > 0) list.append(field(`reason-${k}`, n, `${k} ${n}`), " ");
    if (!list.hasChildNodes()) list.append("no checkpoint after checkpoint 0 yet");
    section.append(el("h3", {}, "by reason"), list);
  }
  section.append(el("h3", {}, "last checkpoints"), recentTable(Array.isArray(r.recentCheckpoints) ? r.recentCheckpoints : []));
  const last = held && obj(held.lastDivergence);
  if (last) {
    section.append(el("h3", {}, "last divergence"), el("p", { "data-field": "last-divergence" }, field("last-divergence-reason", last.reason), " ", el("code", {}, field("last-divergence-flow", last.flow, last.detail))));
  }
  section.append(el("h3", {}, "failover events"), failoverList(r.failovers));
  return section;
}

function render(view) {
  const main = document.getElementById("vms");
  main.replaceChildren(...view.vms.map(vmCard));
  if (view.vms.length === 0) main.append(el("p", { class: "muted" }, "no VM runs on this host"));
  main.setAttribute("data-count", String(view.vms.length));
  const updated = document.getElementById("updated");
  updated.textContent = `updated ${view.at} · ${view.vms.length} VM${view.vms.length === 1 ? "" : "s"}`;
  updated.setAttribute("data-value", view.at);
  updated.classList.remove("error");
}

async function poll() {
  try {
    const res = await fetch("/api/status", { cache: "no-store" });
    if (!res.ok) throw new Error(`${res.status} ${await res.text()}`);
    render(await res.json());
  } catch (err) {
    const updated = document.getElementById("updated");
    updated.textContent = `colo serve did not answer: ${err.message}`;
    updated.classList.add("error");
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
