// devserve live reload: the page follows the server's code (see devserve/livereload.py).
//
// The page's <script> tag names the image (the code) that made the page. The event stream
// greets with the image serving now: a different one means new code, so the page reloads.
// The stream closes at every server reload (most modes say "reload" first, and the page's
// request waits in the server's backlog for the new code); this script reconnects at once.
//   hello {image}                    the code serving now
//   error {file, line, message, source}  a change refused (syntax error), or a failed load
//   css {path}                       a stylesheet changed: swapped in place, no reload
//   reload {}                        another static file or a template changed, or the code
// No inline script or style: a page with a strict Content-Security-Policy runs it too.
(() => {
  "use strict";
  const script = document.currentScript;
  const pageImage = script ? script.dataset.image : undefined;
  const RELOADS_KEY = "devserve:reloads";
  const MAX_RELOADS = 3; // for one image: a page that keeps coming back stale is left alone
  const MAX_DELAY = 2000; // ms between two connection attempts, at most
  let delay = 0;
  let overlay = null;
  let leaving = false; // a reload is asked: one navigation, nothing more from this page

  function connect() {
    const source = new EventSource("/__devserve__/events");
    source.addEventListener("hello", (message) => {
      delay = 0;
      const image = JSON.parse(message.data).image;
      if (pageImage && image !== pageImage) {
        reloadFor(image);
      } else {
        hideOverlay();
      }
    });
    source.addEventListener("error", (message) => {
      if (message instanceof MessageEvent && message.data) {
        showOverlay(JSON.parse(message.data)); // the server's event
        return;
      }
      // The connection ended (a reload, a stop): try again, sooner after a good run.
      source.close();
      if (leaving) return;
      setTimeout(connect, delay);
      delay = Math.min(MAX_DELAY, delay ? delay * 2 : 50);
    });
    source.addEventListener("css", (message) => swapStylesheet(JSON.parse(message.data).path));
    source.addEventListener("reload", () => reloadPage());
  }

  function reloadPage() {
    if (leaving) return; // a second reload would cancel the first one's request
    leaving = true;
    location.reload();
  }

  function reloadFor(image) {
    let counts = {};
    try {
      counts = JSON.parse(sessionStorage.getItem(RELOADS_KEY) || "{}");
    } catch (error) {
      counts = {};
    }
    const count = counts[image] || 0;
    if (count >= MAX_RELOADS) {
      console.warn("devserve: this page keeps coming from older code; not reloading again");
      return;
    }
    try {
      sessionStorage.setItem(RELOADS_KEY, JSON.stringify({ [image]: count + 1 }));
    } catch (error) {
      // storage refused (private mode, quota): reload all the same
    }
    reloadPage();
  }

  // --- stylesheets ---

  function swapStylesheet(path) {
    const links = Array.from(document.querySelectorAll('link[rel~="stylesheet"][href]'));
    const name = path.split("/").pop();
    const pathOf = (link) => new URL(link.href, location.href).pathname;
    let chosen = links.filter((link) => pathOf(link) === path);
    if (!chosen.length) chosen = links.filter((link) => pathOf(link).split("/").pop() === name);
    if (!chosen.length) chosen = links; // imported by another one: refresh them all
    chosen.forEach(refresh);
  }

  function refresh(link) {
    // A copy with a new query loads beside the old one, which goes once it is in: the page
    // never shows unstyled, and keeps its scroll position and its forms.
    const url = new URL(link.href, location.href);
    url.searchParams.set("devserve", Date.now().toString(36));
    const next = link.cloneNode();
    next.href = url.href;
    const done = () => link.remove();
    next.addEventListener("load", done, { once: true });
    next.addEventListener("error", done, { once: true });
    link.after(next);
  }

  // --- the error overlay ---

  const OVERLAY_STYLE = `
    :host { all: initial; }
    .backdrop { position: fixed; inset: 0; z-index: 2147483647; background: rgba(0,0,0,.66);
      display: flex; align-items: flex-start; justify-content: center; padding: 8vh 1rem;
      font: 14px/1.5 system-ui, sans-serif; }
    .box { background: #1e1e1e; color: #eee; border-top: 6px solid #e5484d; max-width: 56rem;
      width: 100%; padding: 1.25rem 1.5rem; border-radius: 6px;
      box-shadow: 0 10px 40px rgba(0,0,0,.5); }
    h1 { font-size: 1rem; margin: 0 0 .5rem; color: #ff8589; }
    .where { font-family: ui-monospace, monospace; color: #9cdcfe; }
    .message { font-weight: 600; margin: .5rem 0; white-space: pre-wrap; }
    pre { background: #111; padding: .75rem 1rem; overflow: auto; margin: .5rem 0 0;
      font: 13px/1.4 ui-monospace, monospace; }
    .hint { color: #aaa; font-size: 12px; margin-top: .75rem; }
    button { float: right; background: none; border: 0; color: #aaa; font-size: 20px;
      cursor: pointer; }`;

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function showOverlay(problem) {
    hideOverlay();
    const host = element("div");
    host.id = "devserve-error-overlay";
    const root = host.attachShadow({ mode: "open" });
    if ("adoptedStyleSheets" in root) {
      const sheet = new CSSStyleSheet(); // not an inline style: allowed by a strict CSP
      sheet.replaceSync(OVERLAY_STYLE);
      root.adoptedStyleSheets = [sheet];
    }
    const box = element("div", "box");
    const close = element("button", "", "\u00d7");
    close.title = "Hide (it comes back with the next error)";
    close.addEventListener("click", hideOverlay);
    box.append(close, element("h1", "", "devserve: the new code is not serving"));
    if (problem.file) {
      const where = problem.line ? `${problem.file}, line ${problem.line}` : problem.file;
      box.append(element("div", "where", where));
    }
    box.append(element("div", "message", problem.message || ""));
    if (problem.source) box.append(element("pre", "", problem.source));
    box.append(element("div", "hint", "Save a fix: this page reloads with the new code."));
    const backdrop = element("div", "backdrop");
    backdrop.append(box);
    root.append(backdrop);
    (document.body || document.documentElement).append(host);
    overlay = host;
  }

  function hideOverlay() {
    if (overlay) overlay.remove();
    overlay = null;
  }

  connect();
})();
