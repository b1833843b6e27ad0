"""The few HTML pages the gateway itself shows: waiting, failed/stopped, forbidden.

Each is one self-contained document (inline CSS, one inline script with a
nonce, no external assets) that says what is happening and what to do.
URLs inside are relative, so the pages work behind another proxy prefix.
"""

from __future__ import annotations

import html
import json
import secrets

from aiohttp import web

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
main{max-width:46rem;margin:12vh auto;padding:2rem 2.5rem;background:#fff;border-radius:10px;
box-shadow:0 2px 12px rgba(0,0,0,.08)}
h1{font-size:1.35rem;margin:0 0 .5rem}
p{line-height:1.5}
.phase{display:flex;align-items:center;gap:.75rem;font-size:1.05rem}
.spinner{width:1.1rem;height:1.1rem;border:3px solid #cfd6e4;border-top-color:#3b6fd8;border-radius:50%;
animation:spin 1s linear infinite}
@keyframes spin{to{transform:rotate(360deg)}}
.steps{display:flex;gap:1.5rem;margin:1.25rem 0 0;padding:0;list-style:none;color:#8a93a6;font-size:.9rem}
.steps li.on{color:#1d2330;font-weight:600}
.steps li.done{color:#2f8a4c}
.reason{background:#fff4f2;border-left:4px solid #d9534f;padding:.6rem .9rem}
pre{background:#1d2330;color:#e6e9ef;padding:1rem;border-radius:6px;overflow:auto;max-height:22rem;font-size:.8rem}
button{font-size:1rem;padding:.55rem 1.2rem;border:0;border-radius:6px;background:#3b6fd8;color:#fff;cursor:pointer}
small{color:#8a93a6}
"""


def _document(title: str, body: str, *, script: str = "") -> tuple[str, str]:
    nonce = secrets.token_urlsafe(16)
    script_tag = f'<script nonce="{nonce}">{script}</script>' if script else ""
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{body}</main>{script_tag}</body></html>"
    )
    csp = (
        "default-src 'none'; style-src 'unsafe-inline'; "
        f"script-src 'nonce-{nonce}'; connect-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'self'"
    )
    return page, csp


def _response(page_csp: tuple[str, str], status: int) -> web.Response:
    page, csp = page_csp
    return web.Response(
        text=page,
        status=status,
        content_type="text/html",
        headers={
            "Content-Security-Policy": csp,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


_WAIT_JS = """
const statusUrl = %(status_url)s;
let state = %(state)s;
let phase = %(phase)s;
const order = ["queued", "starting", "ready"];
function show(s) {
  document.getElementById("message").textContent = s.message;
  document.getElementById("phase").textContent = s.phase || s.state;
  const at = order.indexOf(s.state);
  document.querySelectorAll(".steps li").forEach((li, i) => {
    li.className = i < at ? "done" : (i === at ? "on" : "");
  });
}
async function poll() {
  for (;;) {
    try {
      const r = await fetch(statusUrl + "?wait=25&since=" + encodeURIComponent(state) +
                            "&phase=" + encodeURIComponent(phase),
                            {cache: "no-store", credentials: "same-origin",
                             headers: {"Accept": "application/json"}});
      if (r.status === 403 || r.status === 404) { location.reload(); return; }
      const s = await r.json();
      state = s.state;
      phase = s.phase || s.state;
      show(s);
      if (["ready", "failed", "stopped", "none"].includes(s.state)) { location.reload(); return; }
    } catch (e) {
      await new Promise(ok => setTimeout(ok, 2000));
    }
  }
}
poll();
"""


def waiting_page(title: str, status: dict, *, status_url: str) -> web.Response:
    """The page shown while a viz server starts; reloads into the app when ready.

    Example:
        >>> waiting_page("run 1", {"state": "queued", "message": "Waiting"},
        ...              status_url="__hpcviz__/status").status
        200
    """
    body = (
        f"<h1>{html.escape(title)}</h1>"
        "<div class=phase><div class=spinner></div>"
        f"<span id=message>{html.escape(status.get('message', ''))}</span></div>"
        "<ol class=steps><li>queued</li><li>starting</li><li>ready</li></ol>"
        f"<p><strong id=phase>{html.escape(status.get('phase') or status.get('state', ''))}</strong></p>"
        "<p><small>The 3D view opens by itself when its server is ready. "
        "On a busy cluster this can take a few minutes.</small></p>"
    )
    script = _WAIT_JS % {
        "status_url": json.dumps(status_url),
        "state": json.dumps(status.get("state", "queued")),
        "phase": json.dumps(status.get("phase") or status.get("state", "queued")),
    }
    shown = {"state": status.get("state"), "phase": status.get("phase"), "message": status.get("message", "")}
    script += f"show({json.dumps(shown)});"
    return _response(_document(f"Starting {title}", body, script=script), 200)


def problem_page(
    status: int,
    heading: str,
    message: str,
    *,
    reason: str = "",
    log_tail: str = "",
    restart_url: str | None = None,
) -> web.Response:
    """A page that says what went wrong and what to do (optionally a "start again" button).

    Example:
        >>> problem_page(403, "This link has expired", "Ask for a new link.").status
        403
    """
    parts = [f"<h1>{html.escape(heading)}</h1>", f"<p>{html.escape(message)}</p>"]
    if reason:
        parts.append(f"<p class=reason id=reason>{html.escape(reason)}</p>")
    if log_tail.strip():
        parts.append("<p><small>Last lines of the viz server's log:</small></p>")
        parts.append(f"<pre id=log>{html.escape(log_tail)}</pre>")
    if restart_url:
        parts.append(
            f'<form method=post action="{html.escape(restart_url)}">'
            "<button type=submit>Start again</button></form>"
        )
    return _response(_document(heading, "".join(parts)), status)
