// The loadwise dashboard: polls the admin API every second, keeps a short history of
// every backend in the browser, and draws it. No library, nothing fetched from
// elsewhere. Every text from the server is set with textContent, never as markup.
"use strict";

(function () {
  const POLL_MS = 1000;
  const REQUEST_TIMEOUT_MS = 3000;
  // The charts span the history kept, from one minute up to five.
  const WINDOW_MS = 5 * 60 * 1000;
  const MIN_SPAN_MS = 60 * 1000;
  const MAX_SAMPLES = 5 * 60 + 30;
  const TOKEN_KEY = "loadwise.adminToken";
  const PALETTE = ["#1f5fa8", "#c0392b", "#1d7a3a", "#7b3fa8", "#9a5b00", "#0f7c7c", "#b0306f", "#4d5a1e"];
  const SVG_NS = "http://www.w3.org/2000/svg";
  const ACTIONS = [
    { name: "drain", label: "Drain", target: "draining" },
    { name: "undrain", label: "Undrain", target: "ready" },
    { name: "maintenance", label: "Maintenance", target: "maintenance" },
  ];
  const COLUMNS = [
    ["id", "ID"],
    ["address", "Address"],
    ["protocol", "Protocol"],
    ["state", "State"],
    ["reported", "Reported memory"],
    ["cpu", "CPU"],
    ["weight", "Weight"],
    ["effective", "Effective load"],
    ["cost", "Client cost"],
    ["heartbeat", "Last heartbeat"],
    ["picks", "Picks (since heartbeat)"],
    ["age", "Connected for"],
    ["actions", "Actions"],
  ];

  // Per backend ("service/id"): its samples, oldest first, at most MAX_SAMPLES.
  const history = new Map();
  // Per service name: the DOM of its section.
  const sections = new Map();
  let lastSuccess = null;
  let token = readToken();

  const el = (id) => document.getElementById(id);

  function readToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (_) {
      return "";
    }
  }

  function storeToken(value) {
    token = value;
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      // Storage may be disabled; the token then lasts until the page is closed.
    }
    showTokenStatus();
    for (const section of sections.values()) {
      for (const row of section.rows.values()) updateButtons(row);
    }
  }

  function showTokenStatus() {
    el("token-status").textContent = token
      ? "A token is set for this tab: drain, undrain and maintenance are enabled."
      : "Enter the admin token to enable drain, undrain and maintenance. It is kept for this tab only.";
  }

  function make(tag, attributes, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svg(tag, attributes) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, String(value));
    return node;
  }

  async function getJson(path) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    try {
      const response = await fetch(path, { signal: controller.signal, cache: "no-store" });
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || "HTTP " + response.status);
      return body;
    } finally {
      clearTimeout(timer);
    }
  }

  async function poll() {
    try {
      const list = await getJson("v1/services");
      const now = Date.now();
      // One list at a time: the server builds only a few at once, and answers
      // 503 to the rest. Each shows the first page (500 backends by id).
      const results = [];
      for (const service of list.services) {
        results.push(await getJson("v1/services/" + encodeURIComponent(service.name) + "/backends"));
      }
      render(list.services, results, now);
      lastSuccess = now;
      showReachable(list.services, results);
    } catch (error) {
      showUnreachable(error);
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  function showReachable(services, results) {
    el("banner").hidden = true;
    const backends = results.reduce((sum, result) => sum + result.backends.length, 0);
    el("status").textContent =
      plural(services.length, "service") + ", " + plural(backends, "backend") +
      " · updated " + clock(lastSuccess);
    el("status").classList.remove("stale");
  }

  function showUnreachable(error) {
    const reason = error && error.name === "AbortError" ? "no answer in time" : String(error && error.message);
    const since = lastSuccess ? " Showing data from " + clock(lastSuccess) + "." : "";
    el("banner-detail").textContent = "(" + reason + ")" + since + " Retrying every second…";
    el("banner").hidden = false;
    el("status").textContent = "Disconnected";
    el("status").classList.add("stale");
  }

  function plural(n, word) {
    return n + " " + word + (n === 1 ? "" : "s");
  }

  function clock(ms) {
    return new Date(ms).toLocaleTimeString([], { hour12: false });
  }

  function render(services, results, now) {
    const seen = new Set();
    services.forEach((service, index) => {
      seen.add(service.name);
      const section = sections.get(service.name) || createSection(service);
      updateSection(section, service, results[index], now);
    });
    for (const [name, section] of sections) {
      if (!seen.has(name)) {
        section.root.remove();
        sections.delete(name);
      }
    }
    keepInOrder(services);
    el("empty").hidden = services.length > 0;
  }

  // Sections follow the order of the service list; moved only when it changed, so
  // that a focused button keeps its focus.
  function keepInOrder(services) {
    const container = el("services");
    const wanted = services.map((service) => sections.get(service.name).root);
    const shown = Array.from(container.children);
    if (wanted.length !== shown.length || wanted.some((root, i) => root !== shown[i])) container.append(...wanted);
  }

  function createSection(service) {
    const name = service.name;
    const root = make("section", { class: "panel service", "data-service": name });
    const heading = make("h2", {}, "Service " + name);
    if (service.default) heading.append(" ", make("span", { class: "tag" }, "default: legacy backends and logins"));
    const meta = make("p", { class: "meta" });
    const charts = make("div", { class: "charts" });
    const load = createChart("Effective load per backend (%)");
    const picks = createChart("Picks per second per backend");
    charts.append(load.figure, picks.figure);
    const legend = make("ul", { class: "legend", "aria-label": "Chart legend" });
    const table = make("table", { class: "backends" });
    table.append(make("caption", {}, "Backends of service " + name));
    // A wide table scrolls inside its frame rather than widening the page.
    const frame = make("div", { class: "table-frame" });
    frame.append(table);
    const headRow = make("tr");
    for (const [, title] of COLUMNS) headRow.append(make("th", { scope: "col" }, title));
    const thead = make("thead");
    thead.append(headRow);
    const tbody = make("tbody");
    table.append(thead, tbody);
    const empty = make("p", { class: "hint" }, "No backend is registered.");
    root.append(heading, meta, charts, legend, frame, empty);
    el("services").append(root);
    const section = { name, root, meta, load, picks, legend, frame, tbody, empty, rows: new Map() };
    sections.set(name, section);
    return section;
  }

  function createChart(title) {
    const figure = make("figure", { class: "chart" });
    const caption = make("figcaption", {}, title);
    const canvas = svg("svg", { role: "img", "aria-label": title, class: "plot", height: 170 });
    figure.append(caption, canvas);
    return { figure, svg: canvas, title };
  }

  function updateSection(section, service, result, now) {
    const states = service.states;
    section.meta.textContent =
      "Policy " + service.policy + " · scoring " + service.scoring + " · " + plural(service.backends, "backend") +
      ": " + states.ready + " ready, " +
      states.draining + " draining, " + states.maintenance + " in maintenance · TTL " +
      result.ttl_seconds + " s";
    const present = new Set();
    for (const backend of result.backends) {
      const key = service.name + "/" + backend.id;
      present.add(key);
      record(key, backend, now);
      const row = section.rows.get(backend.id) || createRow(section, backend);
      updateRow(row, backend);
    }
    for (const [id, row] of section.rows) {
      if (!present.has(service.name + "/" + id)) {
        row.tr.remove();
        section.rows.delete(id);
        history.delete(service.name + "/" + id);
      }
    }
    section.empty.hidden = result.backends.length > 0;
    section.frame.hidden = result.backends.length === 0;
    drawCharts(section, now);
  }

  function record(key, backend, now) {
    let samples = history.get(key);
    if (!samples) {
      samples = [];
      history.set(key, samples);
    }
    const previous = samples[samples.length - 1];
    let rate = null;
    if (previous && backend.picks_total >= previous.picks) {
      const seconds = (now - previous.t) / 1000;
      if (seconds > 0) rate = (backend.picks_total - previous.picks) / seconds;
    }
    samples.push({ t: now, load: backend.effective_load_percent, picks: backend.picks_total, rate });
    while (samples.length > MAX_SAMPLES || (samples.length && samples[0].t < now - WINDOW_MS)) {
      samples.shift();
    }
  }

  function color(id) {
    return PALETTE[id % PALETTE.length];
  }

  function createRow(section, backend) {
    const tr = make("tr", { "data-backend-id": String(backend.id) });
    const cells = {};
    for (const [field, title] of COLUMNS) {
      // The value sits in one wrapper, so that a phone's card shows label | value.
      const td = make("td", { "data-field": field, "data-label": title });
      const value = make("div", { class: "value" });
      td.append(value);
      cells[field] = value;
      tr.append(td);
    }
    const swatch = make("span", { class: "swatch swatch-" + (backend.id % PALETTE.length), "aria-hidden": "true" });
    const idText = make("span", {}, "#" + backend.id);
    cells.id.append(swatch, idText);
    const badge = make("span", { class: "badge" });
    // Why a backend is out: the operator's hold, what a v2 backend reports, or both.
    const stateNote = make("span", { class: "note" });
    cells.state.append(badge, stateNote);
    const effectiveText = make("span", { class: "number" });
    const meter = make("meter", { min: "0", max: "100", low: "60", high: "85", optimum: "0" });
    cells.effective.append(effectiveText, meter);
    const buttons = {};
    const group = make("div", { class: "actions", role: "group" });
    for (const action of ACTIONS) {
      const button = make("button", { type: "button", class: "action", "data-action": action.name }, action.label);
      button.addEventListener("click", () => act(row, action));
      buttons[action.name] = button;
      group.append(button);
    }
    cells.actions.append(group);
    const row = { tr, cells, badge, stateNote, effectiveText, meter, buttons, group, backend };
    section.rows.set(backend.id, row);
    insertInOrder(section.tbody, tr, backend.id);
    return row;
  }

  function insertInOrder(tbody, tr, id) {
    const after = Array.from(tbody.children).find((other) => Number(other.dataset.backendId) > id);
    tbody.insertBefore(tr, after || null);
  }

  function updateRow(row, backend) {
    row.backend = backend;
    const name = "backend #" + backend.id + " (" + backend.address + ")";
    row.cells.address.textContent = backend.address;
    const v2 = backend.v2;
    row.cells.protocol.textContent = backend.protocol;
    // Health and ejection keep a ready backend from clients without changing its
    // state: the badge says so, the note says for how long.
    const shown = backend.state === "ready" && backend.out_because ? backend.out_because : backend.state;
    row.badge.textContent = shown;
    row.badge.className = "badge state-" + shown;
    const notes = [];
    if (backend.operator_state !== "ready") notes.push("held " + backend.operator_state);
    if (v2) notes.push("reports " + v2.reported_state);
    if (backend.health === "unhealthy") notes.push("failing its checks");
    if (backend.ejected_for_seconds !== null && backend.ejected_for_seconds !== undefined) {
      notes.push("ejected by its clients' reports for " + Math.ceil(backend.ejected_for_seconds) + " s more");
    }
    if (backend.slots) {
      const s = backend.slots;
      notes.push(s.in_use + " of " + s.capacity + " places in use, " + s.free + " free to send here");
    }
    row.stateNote.textContent = notes.join(" · ");
    if (v2) {
      row.cells.reported.textContent = percentOrMissing(v2.memory_percent);
      row.cells.cpu.textContent = percentOrMissing(v2.cpu_percent);
      row.cells.weight.textContent = String(v2.weight);
    } else {
      row.cells.reported.textContent = backend.reported.valid
        ? backend.reported.mem_percent + " %"
        : backend.reported.mem_percent + " (invalid)";
      // Legacy heartbeats carry neither; their weight is the norm.
      row.cells.cpu.textContent = "—";
      row.cells.weight.textContent = "—";
    }
    row.effectiveText.textContent = backend.effective_load_percent.toFixed(2) + " %";
    row.meter.value = Math.min(100, backend.effective_load_percent);
    row.meter.setAttribute("aria-label", "Effective load of " + name);
    row.cells.cost.textContent = backend.client_cost_percent.toFixed(3) + " %";
    row.cells.heartbeat.textContent = backend.heartbeat_age_seconds.toFixed(1) + " s ago";
    row.cells.picks.textContent = backend.picks_total + " (" + backend.picks_since_heartbeat + ")";
    row.cells.age.textContent = duration(backend.connection_age_seconds);
    row.group.setAttribute("aria-label", "Actions for " + name);
    updateButtons(row);
  }

  function percentOrMissing(value) {
    return value === null ? "not reported" : Number(value.toFixed(2)) + " %";
  }

  function updateButtons(row) {
    // Actions set the operator's hold: an action is spent once the hold is its target.
    const held = row.backend.operator_state || row.backend.state;
    for (const action of ACTIONS) {
      const button = row.buttons[action.name];
      button.disabled = !token || held === action.target;
      button.title = token ? action.label + " backend #" + row.backend.id : "Enter the admin token first";
    }
  }

  function duration(seconds) {
    const s = Math.floor(seconds);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  async function act(row, action) {
    const id = row.backend.id;
    const result = el("action-result");
    result.textContent = action.label + " backend #" + id + "…";
    try {
      const response = await fetch("v1/backends/" + id + "/" + action.name, {
        method: "POST",
        headers: { Authorization: "Bearer " + token },
      });
      const body = await response.json();
      if (response.ok && body.state !== body.operator_state) {
        result.textContent =
          "Backend #" + id + " is held " + body.operator_state + ", and stays " + body.state + " as it reports itself.";
      } else if (response.ok) {
        result.textContent = "Backend #" + id + " is now " + body.state + ".";
      } else if (response.status === 401) {
        result.textContent = "The token was refused: " + body.error + ".";
      } else {
        result.textContent = "Backend #" + id + ": " + body.error + ".";
      }
    } catch (error) {
      result.textContent = "The action could not be sent: " + error.message + ".";
    }
  }

  function drawCharts(section, now) {
    const keys = Array.from(section.rows.keys()).map((id) => [id, history.get(section.name + "/" + id) || []]);
    // Loops rather than spreading: thousands of samples would overflow the argument list.
    let oldest = now;
    let peak = 1;
    for (const [, samples] of keys) {
      if (samples.length) oldest = Math.min(oldest, samples[0].t);
      for (const sample of samples) peak = Math.max(peak, sample.rate || 0);
    }
    const span = Math.min(WINDOW_MS, Math.max(MIN_SPAN_MS, now - oldest));
    draw(section.load.svg, keys, now, span, (sample) => sample.load, 100, " %");
    draw(section.picks.svg, keys, now, span, (sample) => sample.rate, niceCeiling(peak), "/s");
    updateLegend(section);
  }

  function redrawAll() {
    if (lastSuccess === null) return;
    for (const section of sections.values()) drawCharts(section, lastSuccess);
  }

  function niceCeiling(value) {
    const magnitude = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 5, 10]) {
      if (value <= step * magnitude) return step * magnitude;
    }
    return 10 * magnitude;
  }

  // A line per backend over the `span` milliseconds before `now`, with labelled axes.
  function draw(canvas, series, now, span, value, max, unit) {
    const width = Math.max(200, Math.round(canvas.getBoundingClientRect().width) || 600);
    const height = 170;
    const pad = { left: 44, right: 8, top: 10, bottom: 22 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    canvas.setAttribute("viewBox", "0 0 " + width + " " + height);
    canvas.replaceChildren();
    const x = (t) => pad.left + ((t - (now - span)) / span) * plotW;
    const y = (v) => pad.top + plotH - (Math.min(v, max) / max) * plotH;
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      canvas.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "grid" }));
      const label = svg("text", { x: pad.left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" });
      label.textContent = formatTick(v) + unit;
      canvas.append(label);
    }
    for (const [ago, anchor] of [[span, "start"], [span / 2, "middle"], [0, "end"]]) {
      const label = svg("text", { x: x(now - ago), y: height - 6, class: "axis", "text-anchor": anchor });
      label.textContent = ago ? "−" + formatSpan(ago) : "now";
      canvas.append(label);
    }
    for (const [id, samples] of series) {
      const points = samples.filter((s) => value(s) !== null).map((s) => x(s.t).toFixed(1) + "," + y(value(s)).toFixed(1));
      if (points.length === 0) continue;
      const attributes = { points: points.join(" "), fill: "none", stroke: color(id), "stroke-width": 2 };
      canvas.append(svg("polyline", attributes));
      const last = points[points.length - 1].split(",");
      canvas.append(svg("circle", { cx: last[0], cy: last[1], r: 3, fill: color(id) }));
    }
  }

  function formatSpan(ms) {
    const seconds = Math.round(ms / 1000);
    if (seconds < 120) return seconds + " s";
    return Math.round(seconds / 60) + " min";
  }

  function formatTick(v) {
    return String(Number(v.toFixed(2)));
  }

  function updateLegend(section) {
    section.legend.replaceChildren();
    for (const row of section.rows.values()) {
      const item = make("li");
      item.append(
        make("span", { class: "swatch swatch-" + (row.backend.id % PALETTE.length), "aria-hidden": "true" }),
        make("span", {}, "#" + row.backend.id + " " + row.backend.address),
      );
      section.legend.append(item);
    }
  }

  function start() {
    el("token").value = token;
    showTokenStatus();
    el("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      storeToken(el("token").value.trim());
    });
    window.addEventListener("resize", redrawAll);
    el("token-clear").addEventListener("click", () => {
      el("token").value = "";
      storeToken("");
    });
    poll();
  }

  start();
})();
