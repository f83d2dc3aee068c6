// devserve live reload: the page follows the server's code (see devserve/livereload.py).
//
// The page's <script> tag names the image (the code) that made the page. The event stream
// greets with the image serving now: a different one means new code, so the page reloads.
// The stream closes at every server reload (most modes say "reload" first, and the page's
// request waits in the server's backlog for the new code); this script reconnects at once.
//   hello {image, changes}           the code serving now, and how many css/reload it sent
//   error {file, line, message, source}  a change refused (syntax error), or a failed load
//   css {path}                       a stylesheet changed: swapped in place, no reload
//   reload {paths?}                  a static file (fetched anew first) or a template
//                                    changed, or the code is reloading
// No inline script or style: a page with a strict Content-Security-Policy runs it too.
// A hidden tab closes its stream (six connections per server, all tabs together).
(() => {
  "use strict";
  if (window.__devserveLiveReload) return; // run once, however often the tag comes
  window.__devserveLiveReload = true;
  const script = document.currentScript;
  const pageImage = script ? script.dataset.image : undefined;
  const RELOADS_KEY = "devserve:reloads";
  const MAX_RELOADS = 3; // for one image: a page that keeps coming back stale is left alone
  const MAX_DELAY = 2000; // ms between two connection attempts, at most
  const STAYED = 3000; // ms: a reload the page did not leave for (a prompt said stay)
  let delay = 0;
  let overlay = null;
  let source = null;
  let changes = null; // the static changes this page knows of (css, reload events)
  let leaving = false; // a reload is asked: one navigation, nothing more from this page

  // A hidden tab holds no connection: a browser allows six per server, all tabs together.
  // Back in view, it reconnects, and what it missed is in the hello.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      if (source) source.close();
      source = null;
    } else if (!source && !leaving) {
      connect();
    }
  });

  function connect() {
    if (document.hidden) return;
    const stream = new EventSource("/__devserve__/events");
    let greeted = false;
    source = stream;
    stream.addEventListener("hello", (message) => {
      greeted = true;
      delay = 0;
      const hello = JSON.parse(message.data);
      if (pageImage && hello.image !== pageImage) {
        reloadFor(hello.image);
      } else if (changes !== null && hello.changes !== changes) {
        reloadPage(); // a stylesheet or a file changed while this tab was hidden
      } else {
        changes = hello.changes;
        hideOverlay();
      }
    });
    stream.addEventListener("error", (message) => {
      if (message instanceof MessageEvent && message.data) {
        showOverlay(JSON.parse(message.data)); // the server's event
        return;
      }
      // Answered, but not with events: not devserve's stream (live reload was turned off).
      const refused = stream.readyState === EventSource.CLOSED && !greeted;
      stream.close();
      if (source === stream) source = null;
      if (refused || leaving || document.hidden) return;
      // The connection ended (a reload, a stop): try again, sooner after a good run.
      setTimeout(connect, delay);
      delay = Math.min(MAX_DELAY, delay ? delay * 2 : 50);
    });
    stream.addEventListener("css", (message) => {
      changes += 1;
      swapStylesheet(JSON.parse(message.data).path);
    });
    stream.addEventListener("reload", (message) => {
      changes += 1;
      const paths = JSON.parse(message.data).paths || [];
      // Fetched anew first: a reload may take a script or an image from the cache.
      const fresh = paths.map((path) => fetch(path, { cache: "reload" }).catch(() => null));
      Promise.all(fresh).then(reloadPage);
    });
  }

  function reloadPage() {
    if (leaving) return; // a second reload would cancel the first one's request
    leaving = true;
    if (source) source.close();
    source = null;
    location.reload();
    // Still here after a while: a prompt ("leave this page?", "resubmit the form?") said
    // stay. Live reload goes on.
    setTimeout(() => {
      leaving = false;
      if (!source) connect();
    }, STAYED);
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
    // This site's stylesheets only (a CDN's is not ours to refresh), and not a copy still
    // loading: the link it replaces is the one to refresh again.
    const links = Array.from(document.querySelectorAll('link[rel~="stylesheet"][href]'))
      .filter((link) => new URL(link.href, location.href).origin === location.origin)
      .filter((link) => !link.hasAttribute("data-devserve-loading"));
    const name = path.split("/").pop();
    const pathOf = (link) => new URL(link.href, location.href).pathname;
    let chosen = links.filter((link) => pathOf(link) === path);
    if (!chosen.length) chosen = links.filter((link) => pathOf(link).split("/").pop() === name);
    if (!chosen.length) chosen = links; // imported by another one: refresh them all
    chosen.forEach(refresh);
  }

  function refresh(link) {
    // A copy with a new query loads beside the old one, which goes once it is in: the page
    // never shows unstyled, and keeps its scroll position and its forms. A copy that fails
    // (the file half-written by a build tool) goes instead, and the old one stays.
    const pending = link.nextElementSibling;
    if (pending && pending.hasAttribute("data-devserve-loading")) pending.remove();
    const url = new URL(link.href, location.href);
    url.searchParams.set("devserve", Date.now().toString(36));
    const next = link.cloneNode();
    next.removeAttribute("integrity"); // the content changed: the old hash cannot match
    next.setAttribute("data-devserve-loading", "");
    next.href = url.href;
    next.addEventListener("load", () => {
      next.removeAttribute("data-devserve-loading");
      link.remove();
    }, { once: true });
    next.addEventListener("error", () => next.remove(), { once: true });
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
