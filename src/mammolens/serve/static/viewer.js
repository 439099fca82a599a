// The four-view viewer (R/L CC, R/L MLO, mirrored), used for studies and reader-study cases.
"use strict";
(async () => {
  await ML.me();
  const m = window.location.pathname.match(/^\/(viewer|reader)\/(\d+)$/);
  if (!m) return;
  const readerMode = m[1] === "reader";
  const id = Number(m[2]);
  const view = { zoom: 1, tx: 0, ty: 0, widthPct: 100, levelPct: 0, invert: false, tool: "pan" };
  let study = null, kase = null;
  const info = {};  // image id -> default window

  const $ = (s) => document.querySelector(s);
  const slots = [...document.querySelectorAll(".vp")];

  function applyTransform() {
    for (const vp of slots) {
      const st = vp.querySelector(".stage");
      st.style.transform = `translate(${view.tx}px, ${view.ty}px) scale(${view.zoom})`;
      vp.querySelector(".mg").classList.toggle("inverted", view.invert);
    }
  }
  function applyHeatmap() {
    const on = $("#heatmap-toggle").checked && study && study.ai_visible;
    const op = Number($("#heatmap-opacity").value) / 100;
    for (const vp of slots) {
      const hm = vp.querySelector(".hm");
      hm.style.opacity = String(op);
      hm.hidden = !on || !hm.dataset.src;
      if (on && hm.dataset.src && hm.getAttribute("src") !== hm.dataset.src) hm.src = hm.dataset.src;
    }
  }
  function imageUrl(imId) {
    const d = info[imId];
    const p = new URLSearchParams();
    if (d && (view.widthPct !== 100 || view.levelPct !== 0)) {
      p.set("ww", String(Math.max(d.window_width / 1000, d.window_width * view.widthPct / 100)));
      p.set("wc", String(d.window_center + d.window_width * view.levelPct / 100));
    }
    const q = p.toString();
    return `/api/images/${imId}/image.png` + (q ? "?" + q : "");
  }
  let wlTimer = null;
  function refreshImages(delay = 150) {
    clearTimeout(wlTimer);
    wlTimer = setTimeout(() => {
      for (const vp of slots) { const imId = vp.dataset.image; if (imId) vp.querySelector(".mg").src = imageUrl(imId); }
    }, delay);
  }

  async function loadStudy() {
    if (readerMode) {
      kase = await ML.api("GET", `/api/reader/cases/${id}`);
      study = kase.study;
      $("#study-title").textContent = `Reader study — case ${kase.position}`;
    } else {
      study = await ML.api("GET", `/api/studies/${id}`);
      $("#study-title").textContent = `${study.patient_id} · ${study.accession} · ${study.study_date}`;
    }
    const byId = Object.fromEntries(study.images.map((im) => [im.id, im]));
    for (const vp of slots) {
      const imId = study.hanging[vp.dataset.slot];
      const mg = vp.querySelector(".mg"), hm = vp.querySelector(".hm");
      vp.dataset.image = imId || "";
      vp.classList.toggle("missing", !imId);
      vp.querySelector(".stage").classList.toggle("right", vp.dataset.slot.startsWith("R"));
      if (!imId) { mg.removeAttribute("src"); hm.removeAttribute("src"); hm.dataset.src = ""; vp.querySelector(".img-score").textContent = "no image"; continue; }
      if (!info[imId]) info[imId] = await ML.api("GET", `/api/images/${imId}/info`);
      mg.src = imageUrl(imId);
      const im = byId[imId];
      hm.dataset.src = im.has_heatmap ? `/api/images/${imId}/heatmap.png` : "";
      vp.querySelector(".img-score").textContent = study.ai_visible && im.score !== null
        ? `image ${ML.pct(im.score)} · breast ${ML.pct(im.breast_score)}` : "";
    }
    const vis = study.ai_visible;
    for (const e of document.querySelectorAll(".ai-only")) e.hidden = !vis;
    $("#ai-hidden").hidden = vis;
    $("#ai-exam").textContent = vis ? ML.pct(study.exam_score) + (study.flagged ? " ▲ above operating point" : "") : "hidden";
    $("#ai-R").textContent = vis ? ML.pct(study.breast_scores.R) : "hidden";
    $("#ai-L").textContent = vis ? ML.pct(study.breast_scores.L) : "hidden";
    $("#ai-status").textContent = study.status + (study.error ? ` (${study.error})` : "");
    const badge = $("#exam-score");
    badge.textContent = vis && study.exam_score !== null ? `AI ${ML.pct(study.exam_score)}` : "";
    badge.classList.toggle("flag", !!(vis && study.flagged));
    applyHeatmap();
    applyTransform();
    if (readerMode) renderReadPanel(); else setupReadingStatus();
  }

  async function setupReadingStatus() {
    const sel = $("#reading-status");
    sel.value = study.reading_status;
    if (!setupReadingStatus.done) {
      setupReadingStatus.done = true;
      sel.addEventListener("change", async () => { study = await ML.api("PATCH", `/api/studies/${id}`, { reading_status: sel.value }); });
      if (study.reading_status === "unread" && !study.in_reader_study) {
        try { study = await ML.api("PATCH", `/api/studies/${id}`, { reading_status: "in_progress" }); sel.value = study.reading_status; } catch (e) { /* read-only */ }
      }
    }
  }

  function renderReadPanel() {
    $("#reading-status-box").hidden = true;
    $("#read-panel").hidden = false;
    $("#case-pos").textContent = String(kase.position);
    const u = kase.reads.unaided, a = kase.reads.aided;
    const form = $("#read-form"), submit = $("#read-submit");
    $("#unaided-summary").textContent = u ? `Unaided read: ${u.score} / BI-RADS ${u.birads}${kase.phase === "unaided" ? "" : " (locked)"}` : "";
    $("#start-aided").hidden = !(kase.phase === "unaided" && u);
    $("#acceptable-box").hidden = kase.phase === "unaided";
    $("#next-case").hidden = kase.phase !== "done";
    for (const e of form.elements) e.disabled = kase.phase === "done";
    if (kase.phase === "unaided") {
      $("#phase-text").textContent = "Step 1 of 2: read without AI.";
      submit.textContent = u ? "Update unaided read" : "Save unaided read";
      if (u) { $("#read-score").value = u.score; $("#read-birads").value = String(u.birads); }
    } else if (kase.phase === "aided") {
      $("#phase-text").textContent = "Step 2 of 2: read again with the AI score and heatmap.";
      submit.textContent = "Save aided read";
    } else {
      $("#phase-text").textContent = "Case complete.";
      submit.textContent = "Saved";
      if (a) { $("#read-score").value = a.score; $("#read-birads").value = String(a.birads); }
    }
  }

  $("#read-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const msg = $("#read-msg");
    msg.textContent = "";
    const body = { score: Number($("#read-score").value), birads: Number($("#read-birads").value) };
    try {
      if (kase.phase === "unaided") {
        await ML.api("PUT", `/api/reader/cases/${id}/unaided`, body);
        msg.textContent = "Unaided read saved.";
      } else {
        const acc = document.querySelector('input[name="acceptable"]:checked');
        if (!acc) { msg.textContent = "Rate the heatmap (acceptable: yes or no)."; return; }
        body.heatmap_acceptable = acc.value === "yes";
        await ML.api("PUT", `/api/reader/cases/${id}/aided`, body);
        msg.textContent = "Aided read saved. Case complete.";
      }
      await loadStudy();
    } catch (e) { msg.textContent = e.message; }
  });
  $("#start-aided").addEventListener("click", async () => {
    try {
      await ML.api("POST", `/api/reader/cases/${id}/start-aided`);
      $("#read-score").value = ""; $("#read-birads").value = "";
      $("#read-msg").textContent = "Unaided read locked; AI shown.";
      await loadStudy();
    } catch (e) { $("#read-msg").textContent = e.message; }
  });
  $("#next-case").addEventListener("click", async (ev) => {
    ev.preventDefault();
    const d = await ML.api("GET", "/api/reader/cases");
    window.location.href = d.next_case_id ? `/reader/${d.next_case_id}` : "/reader";
  });

  // tools
  for (const r of document.querySelectorAll('input[name="tool"]')) r.addEventListener("change", () => { view.tool = r.value; });
  $("#heatmap-toggle").addEventListener("change", applyHeatmap);
  $("#heatmap-opacity").addEventListener("input", applyHeatmap);
  $("#zoom-in").addEventListener("click", () => { view.zoom = Math.min(8, view.zoom * 1.25); applyTransform(); });
  $("#zoom-out").addEventListener("click", () => { view.zoom = Math.max(0.5, view.zoom / 1.25); applyTransform(); });
  $("#invert").addEventListener("click", () => { view.invert = !view.invert; applyTransform(); });
  $("#reset").addEventListener("click", () => {
    Object.assign(view, { zoom: 1, tx: 0, ty: 0, widthPct: 100, levelPct: 0, invert: false });
    $("#wl-width").value = "100"; $("#wl-center").value = "0";
    applyTransform(); refreshImages(0);
  });
  $("#wl-width").addEventListener("input", (e) => { view.widthPct = Number(e.target.value); refreshImages(); });
  $("#wl-center").addEventListener("input", (e) => { view.levelPct = Number(e.target.value); refreshImages(); });
  for (const vp of slots) {
    vp.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      view.zoom = Math.min(8, Math.max(0.5, view.zoom * (ev.deltaY < 0 ? 1.1 : 1 / 1.1)));
      applyTransform();
    }, { passive: false });
    let drag = null;
    vp.addEventListener("pointerdown", (ev) => { drag = { x: ev.clientX, y: ev.clientY }; vp.setPointerCapture(ev.pointerId); });
    vp.addEventListener("pointermove", (ev) => {
      if (!drag) return;
      const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
      drag = { x: ev.clientX, y: ev.clientY };
      if (view.tool === "pan") { view.tx += dx; view.ty += dy; applyTransform(); }
      else {
        view.widthPct = Math.min(300, Math.max(5, view.widthPct + dx * 0.5));
        view.levelPct = Math.min(100, Math.max(-100, view.levelPct - dy * 0.25));
        $("#wl-width").value = String(Math.round(view.widthPct)); $("#wl-center").value = String(Math.round(view.levelPct));
        refreshImages(200);
      }
    });
    vp.addEventListener("pointerup", () => { drag = null; });
  }
  await loadStudy();
  window.mammolensViewer = { view, get study() { return study; } };
})();
