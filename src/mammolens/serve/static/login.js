"use strict";
document.getElementById("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const err = document.getElementById("login-error");
  err.textContent = "";
  try {
    await ML.api("POST", "/api/auth/login", {
      username: document.getElementById("username").value,
      password: document.getElementById("password").value,
    }, { noRedirect: true });
    window.location.href = "/worklist";
  } catch (e) { err.textContent = e.message; }
});
