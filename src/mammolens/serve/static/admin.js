"use strict";
(async () => {
  await ML.me();
  async function users() {
    const d = await ML.api("GET", "/api/admin/users");
    const tb = document.querySelector("#users tbody"); tb.replaceChildren();
    for (const u of d.items) {
      const tr = ML.el("tr");
      tr.append(ML.el("td", {}, u.username), ML.el("td", {}, u.role), ML.el("td", {}, u.active ? "yes" : "no"));
      tb.append(tr);
    }
  }
  async function progress() {
    const d = await ML.api("GET", "/api/admin/reader-study/progress");
    const tb = document.querySelector("#progress tbody"); tb.replaceChildren();
    for (const p of d.items) {
      const tr = ML.el("tr");
      tr.append(ML.el("td", {}, p.reader), ML.el("td", {}, String(p.cases)), ML.el("td", {}, String(p.unaided_done)), ML.el("td", {}, String(p.aided_done)));
      tb.append(tr);
    }
  }
  document.getElementById("upload-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const fd = new FormData();
    for (const f of document.getElementById("upload-files").files) fd.append("files", f, f.name);
    const out = document.getElementById("upload-result");
    try { out.textContent = JSON.stringify(await ML.api("POST", "/api/studies", fd), null, 1); }
    catch (e) { out.textContent = "Rejected: " + e.message + "\n" + JSON.stringify(e.data, null, 1); }
  });
  document.getElementById("pull-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {};
    const uid = document.getElementById("pull-uid").value.trim(); if (uid) body.study_uid = uid;
    const pid = document.getElementById("pull-pid").value.trim(); if (pid) body.patient_id = pid;
    const out = document.getElementById("pull-result");
    try { out.textContent = JSON.stringify(await ML.api("POST", "/api/pacs/pull", body), null, 1); }
    catch (e) { out.textContent = "Failed: " + e.message; }
  });
  document.getElementById("user-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const msg = document.getElementById("user-msg");
    try {
      await ML.api("POST", "/api/admin/users", { username: document.getElementById("new-user").value,
        password: document.getElementById("new-pass").value, role: document.getElementById("new-role").value });
      msg.textContent = "added"; await users();
    } catch (e) { msg.textContent = e.message; }
  });
  document.getElementById("truth-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const msg = document.getElementById("rs-msg");
    const id = Number(document.getElementById("truth-id").value);
    try {
      const st = await ML.api("PATCH", `/api/studies/${id}`, { truth: Number(document.getElementById("truth-value").value) });
      msg.textContent = `study ${st.id}: truth ${st.truth}`;
    } catch (e) { msg.textContent = e.message; }
  });
  document.getElementById("rs-add").addEventListener("click", async () => {
    const ids = document.getElementById("rs-ids").value.split(/[ ,]+/).filter(Boolean).map(Number);
    const msg = document.getElementById("rs-msg");
    try { const r = await ML.api("POST", "/api/admin/reader-study", { study_ids: ids }); msg.textContent = `${r.cases_added} cases added`; await progress(); }
    catch (e) { msg.textContent = e.message; }
  });
  await users(); await progress();
})();
