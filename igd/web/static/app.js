/* igd status page: a live view of the gateway over Server-Sent Events, in plain JavaScript.
 *
 * Every value that comes from the gateway is written with textContent or setAttribute, never as
 * markup: mapping descriptions are chosen by whoever asked for the mapping. The admin token (if
 * any) lives in sessionStorage and travels only in the Authorization header.
 */
"use strict";

(() => {
  const TOKEN_KEY = "igd.adminToken";
  const POLL_MS = 5000;
  const SSE_RETRY_MS = 30000;
  const CONFIRM_MS = 4000;
  const TOAST_MS = 4500;
  const SOON_S = 60;
  const ORIGINS = { upnp: "UPnP", natpmp: "NAT-PMP", pcp: "PCP", admin: "Admin" };
  const MEDIA = {
    lan: "LAN",
    pppoe: "PPPoE",
    tunnel: "Tunnel",
    bridge: "Bridge",
    direct: "Direct",
    phone: "Dial-up",
    isdn: "ISDN",
  };
  const ROLE_ORDER = { public: 0, private: 1 };
  const LIVE_LABELS = {
    live: "Live",
    connecting: "Connecting…",
    polling: "Polling",
    offline: "Offline",
  };

  const $ = (id) => document.getElementById(id);
  const nowS = () => performance.now() / 1000;

  const state = {
    snapshot: null, // the last snapshot, without its mappings
    entries: new Map(), // mapping id -> { m, deadline, row, dirty, fresh }
    sort: { key: "external_port", dir: 1 },
    filter: "",
    token: readToken(),
    counters: null,
    countersAt: 0,
    rates: null,
    source: null,
    pollTimer: 0,
    retryTimer: 0,
    updatedAt: null,
    loaded: false,
  };

  // ---- small helpers ------------------------------------------------------------------------

  function readToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch {
      return "";
    }
  }

  function storeToken(token) {
    state.token = token;
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      /* storage may be disabled: the token then lasts as long as the page */
    }
  }

  /** An element with a class, text and attributes; children appended as nodes or text. */
  function el(tag, options = {}, ...children) {
    const node = document.createElement(tag);
    if (options.className) node.className = options.className;
    if (options.text !== undefined && options.text !== null) node.textContent = String(options.text);
    for (const [name, value] of Object.entries(options.attrs || {})) {
      if (value !== undefined && value !== null && value !== false) {
        node.setAttribute(name, value === true ? "" : String(value));
      }
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const numberFormat = new Intl.NumberFormat();

  function formatBytes(value) {
    const units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let n = Number(value);
    let unit = 0;
    while (n >= 1000 && unit < units.length - 1) {
      n /= 1000;
      unit += 1;
    }
    const digits = unit === 0 || n >= 100 ? 0 : 1;
    return `${n.toFixed(digits)} ${units[unit]}`;
  }

  function formatRate(bytesPerSecond) {
    return `${formatBytes(bytesPerSecond)}/s`;
  }

  function formatDuration(seconds) {
    const s = Math.max(0, Math.ceil(seconds));
    const pad = (n) => String(n).padStart(2, "0");
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${pad(s % 60)} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${pad(Math.floor((s % 3600) / 60))} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  function ipNumber(text) {
    if (!text) return -1;
    return text.split(".").reduce((acc, part) => acc * 256 + Number(part), 0);
  }

  function toast(message, kind = "info") {
    const node = el("div", { className: `toast ${kind}`, text: message });
    $("toasts").append(node);
    setTimeout(() => node.remove(), TOAST_MS);
  }

  /** A button that asks for a second click within CONFIRM_MS before it acts. */
  function confirmButton(label, confirmLabel, className, action) {
    const button = el("button", { className, text: label, attrs: { type: "button" } });
    let timer = 0;
    const disarm = () => {
      clearTimeout(timer);
      button.classList.remove("armed");
      button.textContent = label;
    };
    button.addEventListener("click", async () => {
      if (!button.classList.contains("armed")) {
        button.classList.add("armed");
        button.textContent = confirmLabel;
        timer = setTimeout(disarm, CONFIRM_MS);
        return;
      }
      disarm();
      button.disabled = true;
      try {
        await action();
      } finally {
        button.disabled = false;
      }
    });
    return button;
  }

  // ---- talking to the gateway ---------------------------------------------------------------

  async function post(path, body) {
    const headers = { Authorization: `Bearer ${state.token}` };
    const init = { method: "POST", headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let data = null;
    if (response.status !== 204) {
      try {
        data = await response.json();
      } catch {
        data = null;
      }
    }
    if (response.status === 401) {
      storeToken("");
      renderAdmin();
      renderMappings(true);
      renderConnections();
    }
    return { ok: response.ok, status: response.status, data };
  }

  function failure(result, what) {
    const reason = (result.data && result.data.message) || `HTTP ${result.status}`;
    if (result.status === 401) return `${what}: the admin token was not accepted`;
    return `${what}: ${reason}`;
  }

  async function fetchState() {
    const response = await fetch("api/state", { cache: "no-store", credentials: "omit" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    applySnapshot(await response.json());
  }

  function setLive(mode) {
    $("live").dataset.state = mode;
    $("live-label").textContent = LIVE_LABELS[mode];
  }

  function connect() {
    clearTimeout(state.retryTimer);
    if (state.source) state.source.close();
    if (typeof EventSource !== "function") {
      startPolling();
      return;
    }
    const source = new EventSource("api/events");
    state.source = source;
    setLive("connecting");
    source.addEventListener("open", () => {
      stopPolling();
      setLive("live");
    });
    source.addEventListener("snapshot", (event) => {
      setLive("live");
      applySnapshot(JSON.parse(event.data));
    });
    source.addEventListener("mappings", (event) => applyDelta(JSON.parse(event.data)));
    source.addEventListener("counters", (event) => {
      applyCounters(JSON.parse(event.data).counters);
      renderTraffic();
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        // Refused (busy) or not an event stream: poll, and try the stream again later.
        source.close();
        state.source = null;
        startPolling();
        state.retryTimer = setTimeout(connect, SSE_RETRY_MS);
      } else {
        setLive("connecting");
      }
    });
  }

  function startPolling() {
    if (state.pollTimer) return;
    const poll = async () => {
      try {
        await fetchState();
        setLive("polling");
      } catch {
        setLive("offline");
      }
    };
    poll();
    state.pollTimer = setInterval(poll, POLL_MS);
  }

  function stopPolling() {
    clearInterval(state.pollTimer);
    state.pollTimer = 0;
  }

  // ---- the model ----------------------------------------------------------------------------

  function entryFor(m, at) {
    return {
      m,
      deadline: m.remaining === null ? null : at + m.remaining,
      row: null,
      dirty: true,
      fresh: false,
    };
  }

  function applySnapshot(snapshot) {
    const at = nowS();
    const { mappings, ...rest } = snapshot;
    state.snapshot = rest;
    const seen = new Set();
    for (const m of mappings) {
      seen.add(m.id);
      const old = state.entries.get(m.id);
      const entry = entryFor(m, at);
      if (old) {
        entry.row = old.row;
        entry.fresh = false;
      } else {
        entry.fresh = state.loaded;
      }
      state.entries.set(m.id, entry);
    }
    for (const id of [...state.entries.keys()]) {
      if (!seen.has(id)) dropEntry(id);
    }
    applyCounters(snapshot.counters);
    state.loaded = true;
    touched();
    renderAll();
  }

  function applyDelta(delta) {
    const at = nowS();
    for (const op of delta.ops) {
      if (op.op === "put") {
        const old = state.entries.get(op.mapping.id);
        const entry = entryFor(op.mapping, at);
        entry.row = old ? old.row : null;
        entry.fresh = !old;
        state.entries.set(op.mapping.id, entry);
      } else if (op.op === "remove") {
        dropEntry(op.id);
      }
    }
    if (state.snapshot) {
      state.snapshot.mapping_count = delta.mapping_count;
      state.snapshot.system_update_id = delta.system_update_id;
    }
    touched();
    renderSummary();
    renderMappings(false);
    renderFooter();
  }

  function dropEntry(id) {
    const entry = state.entries.get(id);
    if (entry && entry.row) entry.row.remove();
    state.entries.delete(id);
  }

  function applyCounters(counters) {
    const at = nowS();
    if (counters && state.counters && at > state.countersAt) {
      const dt = at - state.countersAt;
      state.rates = {
        sent: Math.max(0, (counters.bytes_sent - state.counters.bytes_sent) / dt),
        received: Math.max(0, (counters.bytes_received - state.counters.bytes_received) / dt),
      };
    } else if (!counters) {
      state.rates = null;
    }
    if (!state.counters || !counters || JSON.stringify(counters) !== JSON.stringify(state.counters)) {
      state.counters = counters;
      state.countersAt = at;
    }
  }

  function touched() {
    state.updatedAt = new Date();
  }

  // ---- rendering ----------------------------------------------------------------------------

  function renderAll() {
    renderHeader();
    renderAdmin();
    renderInternet();
    renderTraffic();
    renderSummary();
    renderConnections();
    renderMappings(true);
    renderFooter();
  }

  function renderHeader() {
    const title = state.snapshot.title || "igd";
    $("title").textContent = title;
    document.title = `${title} · Gateway status`;
  }

  function publicConnection() {
    return state.snapshot.connections.find((c) => c.role === "public") || null;
  }

  function renderInternet() {
    const snap = state.snapshot;
    $("external-address").textContent = snap.external_address || "Unknown";
    const pub = publicConnection();
    $("public-connection").textContent = pub
      ? `Shared from ${pub.name} · ${pub.status}`
      : "No connection is shared with the internet";
  }

  function renderTraffic() {
    const c = state.counters;
    $("bytes-sent").textContent = c ? formatBytes(c.bytes_sent) : "—";
    $("bytes-received").textContent = c ? formatBytes(c.bytes_received) : "—";
    $("packets-sent").textContent = c ? numberFormat.format(c.packets_sent) : "—";
    $("packets-received").textContent = c ? numberFormat.format(c.packets_received) : "—";
    const r = state.rates;
    $("rate-sent").textContent = c ? (r ? formatRate(r.sent) : "") : "Not reported";
    $("rate-received").textContent = c && r ? formatRate(r.received) : "";
  }

  function renderSummary() {
    const counts = {};
    let disabled = 0;
    for (const { m } of state.entries.values()) {
      counts[m.origin] = (counts[m.origin] || 0) + 1;
      if (!m.enabled) disabled += 1;
    }
    $("mapping-count").textContent = numberFormat.format(state.entries.size);
    const parts = Object.keys(ORIGINS)
      .filter((origin) => counts[origin])
      .map((origin) => `${counts[origin]} ${ORIGINS[origin]}`);
    if (disabled) parts.push(`${disabled} disabled`);
    $("mapping-origins").textContent = parts.length ? parts.join(" · ") : "None yet";
  }

  function renderFooter() {
    const time = state.updatedAt ? state.updatedAt.toLocaleTimeString() : "—";
    $("updated").textContent = `Updated ${time}`;
    const id = state.snapshot ? state.snapshot.system_update_id : null;
    $("update-id").textContent = id === null ? "" : `Change #${id}`;
  }

  function isAdmin() {
    return Boolean(state.snapshot && state.snapshot.admin && state.token);
  }

  function renderAdmin() {
    const button = $("admin-toggle");
    const configured = Boolean(state.snapshot && state.snapshot.admin);
    button.disabled = !configured;
    button.classList.toggle("admin-on", isAdmin());
    if (!configured) {
      button.textContent = "Read-only";
      button.title = "No admin token is configured on the gateway";
      $("admin-panel").hidden = true;
      button.setAttribute("aria-expanded", "false");
    } else {
      button.textContent = isAdmin() ? "Admin" : "Unlock";
      button.title = isAdmin() ? "Admin actions are unlocked" : "Enter the admin token";
    }
    $("admin-lock").hidden = !state.token;
  }

  function renderConnections() {
    if (!state.snapshot) return;
    const snap = state.snapshot;
    const container = $("connections");
    const order = (c) => ROLE_ORDER[c.role] ?? 2;
    const connections = [...snap.connections].sort((a, b) => order(a) - order(b));
    const cards = connections.map((c) => connectionCard(c));
    if (!cards.length) {
      cards.push(el("p", { className: "muted", text: "No network connections found." }));
    }
    container.replaceChildren(...cards);
    const fw = snap.firewall;
    $("firewall-mode").textContent = !fw.enabled
      ? "Firewall: off everywhere"
      : fw.exceptions_not_allowed
        ? "Firewall: shielded (no exceptions)"
        : "Firewall: per connection";
  }

  function connectionCard(c) {
    const roleBadge =
      c.role === "public"
        ? el("span", { className: "badge public", text: "Public · internet" })
        : c.role === "private"
          ? el("span", { className: "badge private", text: "Private · home network" })
          : el("span", { className: "badge", text: "Not shared" });
    const meta = [];
    meta.push(c.addresses.length ? c.addresses.join(", ") : "no IPv4 address");
    if (c.ifname !== c.name) meta.push(c.ifname);
    meta.push(MEDIA[c.media_type] || c.media_type);
    const badges = el("div", { className: "badges" });
    if (c.status !== "connected") badges.append(el("span", { className: "badge warn", text: c.status.replaceAll("_", " ") }));
    badges.append(
      el("span", {
        className: c.effective_firewall ? "badge shield" : "badge",
        text: c.effective_firewall ? "Firewall on" : "Firewall off",
      }),
    );
    if (c.loopback) badges.append(el("span", { className: "badge", text: "loopback" }));
    const card = el(
      "article",
      { className: "connection", attrs: { "data-role": c.role || "none", "data-name": c.name } },
      el(
        "div",
        { className: "connection-head" },
        el("span", { className: "connection-name", text: c.name }),
        roleBadge,
      ),
      el("div", { className: "connection-meta", text: meta.join(" · ") }),
      badges,
    );
    if (isAdmin()) card.append(sharingForm(c));
    return card;
  }

  function sharingForm(c) {
    const select = el(
      "select",
      { attrs: { "aria-label": `Sharing role of ${c.name}` } },
      el("option", { text: "Not shared", attrs: { value: "none" } }),
      el("option", {
        text: "Public (internet)",
        attrs: { value: "public", disabled: !c.shareable && c.role !== "public" },
      }),
      el("option", { text: "Private (home network)", attrs: { value: "private" } }),
    );
    select.value = c.role || "none";
    const apply = confirmButton("Apply", "Confirm", "button small", async () => {
      const role = select.value === "none" ? null : select.value;
      if (role === c.role) return;
      const result = await post(`api/connections/${encodeURIComponent(c.name)}/sharing`, { role });
      if (result.ok) {
        toast(`${c.name}: ${role ? `now ${role}` : "no longer shared"}`);
        await fetchState().catch(() => {});
      } else {
        toast(failure(result, `Could not change ${c.name}`), "error");
        select.value = c.role || "none";
      }
    });
    return el("div", { className: "sharing-form" }, select, apply);
  }

  // ---- the mapping table --------------------------------------------------------------------

  const COMPARE = {
    protocol: (a, b) => a.protocol.localeCompare(b.protocol),
    external_port: (a, b) => a.external_port - b.external_port,
    internal: (a, b) =>
      ipNumber(a.internal_client) - ipNumber(b.internal_client) || a.internal_port - b.internal_port,
    description: (a, b) => a.description.localeCompare(b.description),
    owner: (a, b) => ipNumber(a.owner) - ipNumber(b.owner),
    origin: (a, b) => ORIGINS[a.origin].localeCompare(ORIGINS[b.origin]),
    remaining: (a, b) => remainingOf(a) - remainingOf(b),
  };

  function remainingOf(m) {
    const entry = state.entries.get(m.id);
    return entry && entry.deadline !== null ? entry.deadline : Infinity;
  }

  function compareMappings(a, b) {
    const primary = COMPARE[state.sort.key](a, b) * state.sort.dir;
    return (
      primary ||
      a.external_port - b.external_port ||
      a.protocol.localeCompare(b.protocol) ||
      a.id.localeCompare(b.id)
    );
  }

  function searchText(m) {
    return [
      m.protocol,
      m.external_port,
      m.internal_client,
      m.internal_port,
      m.description,
      m.owner || "admin",
      ORIGINS[m.origin],
      m.remote_host || "",
      m.target_name || "",
    ]
      .join(" ")
      .toLowerCase();
  }

  function timeText(entry, at) {
    if (entry.deadline === null) return { text: "Permanent", soon: false };
    const left = entry.deadline - at;
    if (left <= 0) return { text: "Expiring…", soon: true };
    return { text: formatDuration(left), soon: left < SOON_S };
  }

  function fillRow(row, entry) {
    const m = entry.m;
    row.className = m.enabled ? "" : "disabled";
    if (entry.fresh) {
      row.classList.add("fresh");
      entry.fresh = false;
    }
    row.dataset.id = m.id;
    const protocol = el(
      "td",
      { attrs: { "data-label": "Protocol" } },
      el("span", { className: `badge ${m.protocol.toLowerCase()}`, text: m.protocol }),
    );
    if (!m.enabled) {
      protocol.append(" ", el("span", { className: "badge warn", text: "Off" }));
    } else if (!m.active) {
      protocol.append(
        " ",
        el("span", {
          className: "badge warn",
          text: "Idle",
          attrs: { title: "Kept, but not forwarding: its connection is not shared publicly" },
        }),
      );
    }
    const port = el("td", { className: "port", attrs: { "data-label": "Public port" } }, String(m.external_port));
    if (m.remote_host) port.append(el("span", { className: "note", text: `only from ${m.remote_host}` }));
    const target = el(
      "td",
      { className: "target", attrs: { "data-label": "Forwards to" } },
      `${m.internal_client}:${m.internal_port}`,
    );
    if (m.target_name) target.append(el("span", { className: "note", text: m.target_name }));
    const description = el("td", {
      className: m.description ? "description" : "description none",
      text: m.description || "No description",
      attrs: { "data-label": "Description" },
    });
    const owner = el("td", {
      className: m.owner ? "mono" : "muted",
      text: m.owner || "Administrator",
      attrs: { "data-label": "Owner" },
    });
    const via = el("td", { text: ORIGINS[m.origin] || m.origin, attrs: { "data-label": "Via" } });
    const shown = timeText(entry, nowS());
    const time = el("td", {
      className: shown.soon ? "time soon" : "time",
      text: shown.text,
      attrs: { "data-label": "Time left" },
    });
    const actions = el("td", { className: "actions" });
    if (isAdmin()) actions.append(deleteButton(m));
    row.replaceChildren(protocol, port, target, description, owner, via, time, actions);
    entry.timeCell = time;
    entry.dirty = false;
  }

  function deleteButton(m) {
    return confirmButton("Delete", "Confirm", "button small danger", async () => {
      const query = m.remote_host ? `?remote_host=${encodeURIComponent(m.remote_host)}` : "";
      const path = `api/mappings/${m.protocol}/${m.external_port}/delete${query}`;
      const result = await post(path);
      if (result.ok || result.status === 404) {
        dropEntry(m.id);
        renderSummary();
        renderMappings(false);
        if (result.ok) toast(`Deleted ${m.protocol} ${m.external_port}`);
      } else {
        toast(failure(result, `Could not delete ${m.protocol} ${m.external_port}`), "error");
      }
    });
  }

  /** Bring the table in line with the model; `all` re-renders every row (admin mode changed). */
  function renderMappings(all) {
    const body = $("mapping-rows");
    const filter = state.filter;
    const shown = [];
    for (const entry of state.entries.values()) {
      const visible = !filter || searchText(entry.m).includes(filter);
      if (visible) shown.push(entry);
      else if (entry.row) entry.row.remove();
    }
    shown.sort((a, b) => compareMappings(a.m, b.m));
    let cursor = body.firstElementChild;
    for (const entry of shown) {
      if (!entry.row) entry.row = el("tr");
      if (all || entry.dirty) fillRow(entry.row, entry);
      if (entry.row === cursor) {
        cursor = cursor.nextElementSibling;
      } else {
        body.insertBefore(entry.row, cursor);
      }
    }
    while (cursor) {
      const next = cursor.nextElementSibling;
      cursor.remove();
      cursor = next;
    }
    const empty = $("mappings-empty");
    empty.hidden = shown.length > 0;
    empty.textContent =
      state.entries.size && !shown.length
        ? "No port mapping matches the filter."
        : "No port mappings yet. Devices on your network add them with UPnP, NAT-PMP or PCP, " +
          "and they show up here as soon as they do.";
    for (const th of document.querySelectorAll(".mappings th[data-sort]")) {
      if (th.dataset.sort === state.sort.key) {
        th.setAttribute("aria-sort", state.sort.dir > 0 ? "ascending" : "descending");
      } else {
        th.removeAttribute("aria-sort");
      }
    }
  }

  function tick() {
    const at = nowS();
    for (const entry of state.entries.values()) {
      if (entry.deadline === null || !entry.timeCell) continue;
      const shown = timeText(entry, at);
      if (entry.timeCell.textContent !== shown.text) entry.timeCell.textContent = shown.text;
      entry.timeCell.classList.toggle("soon", shown.soon);
    }
    if (state.sort.key === "remaining") renderMappings(false);
  }

  // ---- wiring -------------------------------------------------------------------------------

  function setUpSorting() {
    for (const th of document.querySelectorAll(".mappings th[data-sort]")) {
      th.querySelector("button").addEventListener("click", () => {
        const key = th.dataset.sort;
        state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
        renderMappings(false);
      });
    }
  }

  function setUpFilter() {
    $("filter").addEventListener("input", (event) => {
      state.filter = event.target.value.trim().toLowerCase();
      renderMappings(false);
    });
  }

  function setUpAdmin() {
    const panel = $("admin-panel");
    const toggle = $("admin-toggle");
    const hint = $("admin-hint");
    const defaultHint = hint.textContent;
    toggle.addEventListener("click", () => {
      panel.hidden = !panel.hidden;
      toggle.setAttribute("aria-expanded", String(!panel.hidden));
      if (!panel.hidden) $("admin-token").focus();
    });
    $("admin-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const input = $("admin-token");
      const token = input.value.trim();
      if (!token) return;
      const response = await fetch("api/auth", {
        method: "POST",
        headers: { Authorization: `Bearer ${token}` },
        cache: "no-store",
        credentials: "omit",
      }).catch(() => null);
      input.value = "";
      if (response && response.status === 204) {
        storeToken(token);
        hint.textContent = defaultHint;
        hint.classList.remove("error");
        panel.hidden = true;
        toggle.setAttribute("aria-expanded", "false");
        toast("Admin actions unlocked for this tab");
        renderAdmin();
        renderConnections();
        renderMappings(true);
      } else {
        hint.textContent = response
          ? response.status === 403
            ? "This gateway is read-only."
            : "That token was not accepted."
          : "The gateway could not be reached.";
        hint.classList.add("error");
      }
    });
    $("admin-lock").addEventListener("click", () => {
      storeToken("");
      panel.hidden = true;
      toggle.setAttribute("aria-expanded", "false");
      renderAdmin();
      renderConnections();
      renderMappings(true);
    });
  }

  function start() {
    setUpSorting();
    setUpFilter();
    setUpAdmin();
    fetchState().catch(() => setLive("offline"));
    connect();
    setInterval(tick, 1000);
    setInterval(renderFooter, 15000);
  }

  start();
})();
