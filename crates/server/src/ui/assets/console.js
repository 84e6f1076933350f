// triage-gate console: progressive enhancement only. Every page works without
// this script (forms post, the Now page reloads itself in <noscript>).
"use strict";
(function () {
  // Now: refresh the live part in place, pausable, paused while the tab is hidden.
  const live = document.getElementById("live");
  const toggle = document.getElementById("live-toggle");
  const status = document.getElementById("live-status");
  if (live && toggle) {
    const every = Number(toggle.dataset.refreshMs) || 5000;
    let paused = false;
    let busy = false;
    const refresh = async () => {
      if (paused || busy || document.hidden) return;
      busy = true;
      try {
        const r = await fetch(live.dataset.src, { credentials: "same-origin", headers: { "Accept": "text/html" } });
        if (r.redirected && r.url.includes("/ui/login")) { location.assign(r.url); return; }
        if (r.ok) {
          live.innerHTML = await r.text();
          status.textContent = "Live: updated " + new Date().toLocaleTimeString();
        } else {
          status.textContent = "Live: update failed (" + r.status + "), retrying";
        }
      } catch (e) {
        status.textContent = "Live: gate unreachable, retrying";
      } finally {
        busy = false;
      }
    };
    setInterval(refresh, every);
    toggle.addEventListener("click", () => {
      paused = !paused;
      toggle.setAttribute("aria-pressed", String(!paused));
      toggle.textContent = paused ? "Resume live updates" : "Pause live updates";
      status.textContent = paused ? "Live updates paused" : "Live: resuming";
      if (!paused) refresh();
    });
  }

  // Keyboard shortcuts (never while typing in a field).
  const items = Array.from(document.querySelectorAll("article.item"));
  let current = -1;
  const select = (i) => {
    if (!items.length) return;
    current = Math.max(0, Math.min(items.length - 1, i));
    items.forEach((el, n) => el.classList.toggle("selected", n === current));
    items[current].focus();
    items[current].scrollIntoView({ block: "nearest" });
  };
  const help = document.getElementById("help");
  let pendingG = false;
  document.addEventListener("keydown", (ev) => {
    const t = ev.target;
    const typing = t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
    if (ev.key === "Escape") {
      if (help) help.hidden = true;
      if (typing) t.blur();
      return;
    }
    if (typing || ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (pendingG) {
      pendingG = false;
      const to = { n: "/ui/now", r: "/ui/review", a: "/ui/autonomy" }[ev.key];
      if (to) { ev.preventDefault(); location.assign(to); }
      return;
    }
    const item = current >= 0 ? items[current] : null;
    switch (ev.key) {
      case "g": pendingG = true; return;
      case "?": if (help) { help.hidden = !help.hidden; } return;
      case "/": { const q = document.getElementById("q"); if (q) { ev.preventDefault(); q.focus(); } return; }
      case "j": ev.preventDefault(); select(current + 1); return;
      case "k": ev.preventDefault(); select(current - 1); return;
      case "a": {
        if (!item) return;
        const b = item.querySelector('[data-action="approve"]');
        if (b) { ev.preventDefault(); b.click(); }
        return;
      }
      case "r": {
        if (!item) return;
        const f = item.querySelector('[data-action="reason"]');
        if (f) { ev.preventDefault(); f.focus(); }
        return;
      }
      case "o": {
        if (!item) return;
        const l = item.querySelector('[data-open="story"]');
        if (l) { ev.preventDefault(); l.click(); }
        return;
      }
    }
  });
  // Clicking into an item selects it too.
  items.forEach((el, n) => el.addEventListener("focusin", () => {
    current = n;
    items.forEach((x, m) => x.classList.toggle("selected", m === n));
  }));
})();
