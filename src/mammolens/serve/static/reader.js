"use strict";
(async () => {
  await ML.me();
  const data = await ML.api("GET", "/api/reader/cases");
  const pr = data.progress;
  document.getElementById("progress").textContent =
    `${pr.aided_done} of ${pr.cases} cases complete (${pr.unaided_done} read without AI).`;
  const cont = document.getElementById("continue");
  if (data.next_case_id) { cont.hidden = false; cont.href = `/reader/${data.next_case_id}`; }
  const tb = document.querySelector("#cases tbody");
  const label = { unaided: "to read (without AI)", aided: "unaided read locked — aided read pending", done: "complete" };
  for (const c of data.items) {
    const tr = ML.el("tr", { "data-case": c.case_id });
    tr.append(ML.el("td", { class: "num" }, String(c.position)));
    tr.append(ML.el("td", {}, label[c.phase] || c.phase));
    const td = ML.el("td"); td.append(ML.el("a", { href: `/reader/${c.case_id}`, class: "open-case" }, c.phase === "done" ? "View" : "Read")); tr.append(td);
    tb.append(tr);
  }
  document.getElementById("empty").hidden = data.items.length > 0;
})();
