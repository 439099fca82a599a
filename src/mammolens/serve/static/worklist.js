"use strict";
(async () => {
  await ML.me();
  const ids = ["f-status", "f-reading", "f-flagged", "f-q"];
  async function load() {
    const p = new URLSearchParams();
    const [st, rd, fl, q] = ids.map((i) => document.getElementById(i).value.trim());
    if (st) p.set("status", st); if (rd) p.set("reading_status", rd); if (fl) p.set("flagged", fl); if (q) p.set("q", q);
    const data = await ML.api("GET", "/api/studies?" + p.toString());
    document.getElementById("op").textContent = `(${ML.pct(data.operating_point)})`;
    const qc = data.queue || {};
    document.getElementById("queue").textContent = `queue: ${qc.queued || 0} waiting, ${qc.scoring || 0} scoring, ${qc.scored || 0} scored, ${qc.failed || 0} failed`;
    const tb = document.querySelector("#worklist tbody");
    tb.replaceChildren();
    for (const s of data.items) {
      const tr = ML.el("tr", { "data-study": s.id, class: s.flagged ? "flagged" : "" });
      tr.append(ML.el("td", { class: "num" }, s.exam_score === null ? "—" : ML.pct(s.exam_score)));
      tr.append(ML.el("td", {}, s.flagged ? "▲ AI flag" : ""));
      tr.append(ML.el("td", {}, s.patient_id));
      tr.append(ML.el("td", {}, s.accession));
      tr.append(ML.el("td", {}, s.study_date));
      tr.append(ML.el("td", { class: "num" }, String(s.n_images)));
      tr.append(ML.el("td", {}, s.status + (s.error ? " — " + s.error : "")));
      tr.append(ML.el("td", {}, s.reading_status.replace("_", " ")));
      const td = ML.el("td"); const a = ML.el("a", { href: `/viewer/${s.id}`, class: "open-study" }, "Open"); td.append(a); tr.append(td);
      tb.append(tr);
    }
    document.getElementById("empty").hidden = data.items.length > 0;
  }
  for (const i of ids) document.getElementById(i).addEventListener("change", load);
  document.getElementById("f-q").addEventListener("input", () => { clearTimeout(load.t); load.t = setTimeout(load, 300); });
  await load();
  setInterval(load, 5000);
})();
