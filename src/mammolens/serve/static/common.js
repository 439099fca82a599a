// Shared helpers: the API client (cookie session + CSRF header), sign-out, header.
"use strict";
const ML = {
  csrf: null,
  user: null,
  async api(method, url, body, opts = {}) {
    const headers = {};
    if (method !== "GET" && ML.csrf) headers["X-CSRF-Token"] = ML.csrf;
    let payload;
    if (body instanceof FormData) payload = body;
    else if (body !== undefined) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
    const r = await fetch(url, { method, headers, body: payload, credentials: "same-origin" });
    if (r.status === 401 && !opts.noRedirect) { window.location.href = "/login"; throw new Error("signed out"); }
    const ct = r.headers.get("content-type") || "";
    const data = ct.includes("application/json") ? await r.json() : await r.text();
    if (!r.ok) {
      const d = data && data.detail !== undefined ? data.detail : data;
      const msg = typeof d === "string" ? d : (d && d.message) || JSON.stringify(d);
      const err = new Error(msg); err.status = r.status; err.data = data; throw err;
    }
    return data;
  },
  async me() {
    const u = await ML.api("GET", "/api/auth/me");
    ML.user = u; ML.csrf = u.csrf_token;
    const who = document.getElementById("whoami");
    if (who) who.textContent = `${u.username} (${u.role})`;
    const adm = document.getElementById("nav-admin");
    if (adm) adm.hidden = u.role !== "admin";
    const out = document.getElementById("logout");
    if (out) out.addEventListener("click", async () => {
      try { await ML.api("POST", "/api/auth/logout"); } finally { window.location.href = "/login"; }
    });
    return u;
  },
  pct(x) { return x === null || x === undefined ? "—" : (100 * x).toFixed(1) + "%"; },
  el(tag, attrs = {}, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  },
};
