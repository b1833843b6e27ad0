"""Tell the open app's page, unobtrusively, when its session will end and, once it ended, why.

A session ends at its job's time limit (Slurm walltime) or at the gateway's
maximum session lifetime, whichever comes first (job_phase.session_end).
The gateway adds this script to the app's HTML page next to the reconnect
script (see reconnect.py). It long-polls ``__hpcviz__/status`` (an answer
as soon as the session's state changes, else every 30 s; polling is not
activity, so it keeps no idle session alive). Shortly before the end
(job_phase.WARN_BEFORE_S) a small notice at the bottom of the page counts
down::

    This session ends in 4 min (the job's time limit). Save what you need.

and, once the session stopped or failed, says why, with a "Start again"
button (a POST to ``__hpcviz__/restart``)::

    This session ended: stopped after 8 h, the gateway's maximum session lifetime; start again

DOM hooks (stable, for tests): ``#hpcviz-session-notice`` with
``data-kind`` ``warning`` or ``ended``; ``window.hpcvizSessionStatus`` is the
last status the script read.

Example:
    >>> "hpcviz-session-notice" in script_text()
    True
"""

from __future__ import annotations

from aiohttp import web

from prefect_hpcviz.viz.gateway.job_phase import WARN_BEFORE_S

SCRIPT_NAME = "end-notice.js"

_SCRIPT = """\
// hpcviz gateway: a small notice before this page's session ends (time limit, maximum lifetime),
// and after it ended, why. #hpcviz-session-notice, data-kind "warning" or "ended".
(() => {
  const here = document.currentScript.src;
  const status = new URL("status", here).href;
  const restart = new URL("restart", here).href;
  const WARN_BEFORE_S = __WARN_BEFORE_S__;
  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
  const bodyReady = () => document.body ? Promise.resolve()
    : new Promise((done) => document.addEventListener("DOMContentLoaded", done, { once: true }));
  let notice = null, countdown = null, dismissed = false;

  function element(tag, style, text) {
    const node = document.createElement(tag);
    Object.assign(node.style, style);
    if (text) node.textContent = text;
    return node;
  }
  async function show(kind, text, action) {
    await bodyReady();
    if (!notice) {
      notice = element("div", {
        position: "fixed", left: "50%", bottom: "16px", transform: "translateX(-50%)",
        zIndex: "2147483647", maxWidth: "min(90vw, 760px)", padding: "6px 8px 6px 14px",
        display: "flex", alignItems: "center", gap: "10px", borderRadius: "6px",
        background: "rgba(16, 24, 40, 0.92)", color: "#f4f6fb", boxShadow: "0 2px 10px rgba(0,0,0,.4)",
        font: "13px/1.4 system-ui, sans-serif",
      });
      notice.id = "hpcviz-session-notice";
      notice.setAttribute("role", "status");
      notice.setAttribute("aria-live", "polite");
      document.body.appendChild(notice);
    }
    notice.dataset.kind = kind;
    notice.style.borderLeft = kind === "ended" ? "4px solid #e5484d" : "4px solid #f5a524";
    notice.replaceChildren(element("span", {}, text), ...(action ? [action] : []));
  }
  function hide() {
    if (notice) notice.remove();
    notice = null;
  }
  const duration = (s) => s < 90 ? `${Math.round(s)} s` : `${Math.round(s / 60)} min`;
  const button = (label, style) => element("button", {
    font: "inherit", color: "inherit", background: "transparent", cursor: "pointer",
    border: "1px solid rgba(255,255,255,.35)", borderRadius: "4px", padding: "1px 8px", whiteSpace: "nowrap", ...style,
  }, label);

  function warn(endsAt, because) {  // count down locally; the long poll brings any change
    clearInterval(countdown);
    const draw = () => {
      if (dismissed) return hide();
      const close = button("\\u00d7", { border: "none", fontSize: "16px", padding: "0 4px" });
      close.title = "Hide";
      close.addEventListener("click", () => { dismissed = true; hide(); });
      const left = Math.max(0, (endsAt - Date.now()) / 1000);
      show("warning", `This session ends in ${duration(left)} (${because}). Save what you need.`, close);
    };
    draw();
    countdown = setInterval(draw, 1000);
  }
  function ended(s) {
    clearInterval(countdown);
    const form = element("form", { margin: "0" });
    form.method = "post";
    form.action = restart;
    form.appendChild(button("Start again", {}));
    const why = s.reason ? `: ${s.reason}` : ".";
    show("ended", `This session ${s.state === "failed" ? "failed" : "ended"}${why}`, form);
  }

  async function watch() {
    let since = null, retry = 1000;
    for (;;) {
      let wait = 30, s;
      const last = window.hpcvizSessionStatus;
      if (last && last.ends_in_s != null && !last.warning) {  // ask again when the warning is due
        wait = Math.min(30, Math.max(1, last.ends_in_s - WARN_BEFORE_S));
      }
      const query = since ? `?wait=${wait}&since=${encodeURIComponent(since)}` : "";
      try {
        const answer = await fetch(status + query, { cache: "no-store", credentials: "same-origin" });
        if (!answer.ok) throw new Error(`status ${answer.status}`);
        s = await answer.json();
        retry = 1000;
      } catch (e) {  // the gateway restarts, or the network is away: ask again later
        await sleep(retry);
        retry = Math.min(retry * 2, 30000);
        continue;
      }
      window.hpcvizSessionStatus = s;
      since = s.state;
      if (s.state === "stopped" || s.state === "failed") return ended(s);
      if (s.state === "ready" && s.warning && s.ends_in_s != null) {
        warn(Date.now() + s.ends_in_s * 1000, s.ends_because || "its time limit");
      } else {
        clearInterval(countdown);
        hide();
      }
    }
  }
  watch();
})();
"""


def script_text() -> str:
    """The script, with the gateway's warning window filled in."""
    return _SCRIPT.replace("__WARN_BEFORE_S__", f"{WARN_BEFORE_S:g}")


def script_response() -> web.Response:
    """The script itself (the gateway serves it under ``/s/<id>/__hpcviz__/end-notice.js``)."""
    return web.Response(
        text=script_text(), content_type="application/javascript", headers={"Cache-Control": "no-cache"}
    )
