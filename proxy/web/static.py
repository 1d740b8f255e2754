"""The admin page's stylesheet and its little script: the page works without the script, which
only makes the device code's countdown tick (the page itself reloads every few seconds)."""

from __future__ import annotations

STYLESHEET = b"""
:root { --ink: #1d2430; --muted: #5b6576; --line: #d8dde6; --bg: #f6f7f9; --ok: #1f7a3a;
        --bad: #b3261e; --warn: #8a5a00; --accent: #1f5fbf; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
       color: var(--ink); background: var(--bg); }
header { display: flex; gap: 1rem; align-items: baseline; padding: .8rem 1.5rem;
         background: #fff; border-bottom: 1px solid var(--line); }
header .brand { font-weight: 700; color: var(--ink); text-decoration: none; }
header span { color: var(--muted); }
main { max-width: 72rem; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.4rem; margin: .5rem 0 1rem; }
h2 { font-size: 1.1rem; margin: 1.8rem 0 .6rem; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 1rem;
          margin-bottom: 1rem; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; vertical-align: top; padding: .45rem .5rem;
         border-bottom: 1px solid var(--line); }
th { font-size: .8rem; text-transform: uppercase; letter-spacing: .03em; color: var(--muted); }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .85em;
              word-break: break-all; }
small, .muted { color: var(--muted); display: block; }
.state-valid { color: var(--ok); } .state-expired { color: var(--muted); }
.state-refresh_failing { color: var(--warn); } .state-needs_authorisation { color: var(--bad); }
.notice { padding: .6rem .8rem; border-radius: 4px; border: 1px solid; }
.notice.ok { background: #eaf6ed; border-color: #b9dfc3; color: var(--ok); }
.notice.failed { background: #fbeceb; border-color: #efc2be; color: var(--bad); }
.empty { color: var(--muted); }
form.inline { display: inline; margin: 0; }
button, .button { font: inherit; padding: .35rem .8rem; border-radius: 4px; cursor: pointer;
                  border: 1px solid var(--accent); background: var(--accent); color: #fff;
                  text-decoration: none; display: inline-block; }
button.quiet { background: #fff; color: var(--accent); }
label { display: block; margin: .6rem 0; }
label .label { display: block; font-weight: 600; margin-bottom: .2rem; }
input, select { font: inherit; padding: .35rem .5rem; width: 100%; max-width: 28rem;
                border: 1px solid var(--line); border-radius: 4px; }
fieldset { border: 1px solid var(--line); border-radius: 6px; margin: 0 0 1rem; }
details { margin: .8rem 0; }
.code { font: 700 2rem ui-monospace, monospace; letter-spacing: .2em; margin: .5rem 0; }
.toolbar { display: flex; gap: 1rem; align-items: center; flex-wrap: wrap; }
"""

SCRIPT = b"""
"use strict";
// Ticks every element with data-expires (seconds since the epoch) down to zero; without this
// script the page shows the time left as of its last reload.
function tick() {
  for (const element of document.querySelectorAll("[data-expires]")) {
    const left = Math.max(0, Math.round(Number(element.dataset.expires) - Date.now() / 1000));
    const minutes = Math.floor(left / 60), seconds = String(left % 60).padStart(2, "0");
    element.textContent = left > 0 ? minutes + ":" + seconds : "expired";
  }
}
document.addEventListener("DOMContentLoaded", () => { tick(); setInterval(tick, 1000); });
"""

ICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
        b'<rect width="16" height="16" rx="3" fill="#1f5fbf"/>'
        b'<path d="M3 5h10v6H3z" fill="none" stroke="#fff" stroke-width="1.5"/>'
        b'<path d="M3 5l5 4 5-4" fill="none" stroke="#fff" stroke-width="1.5"/></svg>')

FILES = {
    "/static/icon.svg": (ICON, "image/svg+xml"),
    "/static/admin.css": (STYLESHEET, "text/css; charset=utf-8"),
    "/static/admin.js": (SCRIPT, "text/javascript; charset=utf-8"),
}
