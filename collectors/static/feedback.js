/* llm-gateway browser collector: what end users do with LLM answers. ES2017, no deps.
 *   <script src="https://GATEWAY/feedback.js"></script>
 *   LLMFeedback.init({key: "pk_...", app: "web", user: "u-1", session: "s-1"});
 *   LLMFeedback.accepted(requestId);   // requestId: the call's X-Request-Id
 *   LLMFeedback.observe(answerEl, requestId);   // dwell time
 *   <div data-llm-request-id="...">    // copies from inside are recorded
 * Events are batched in memory, sent every flushIntervalMs (fetch, keepalive) and by
 * sendBeacon when the page hides or goes: JSON as text/plain, key in ?key=, so no CORS
 * preflight. A client-made event_id makes resending safe.
 */
(function () {
  "use strict";
  if (window.LLMFeedback) return; // included twice

  const MAX_QUEUE = 1000; // while the gateway is unreachable; oldest dropped
  const MAX_TRIES = 5;
  const script = document.currentScript;
  let cfg = null; // by init()
  let timer = null;
  let io = null;
  let queue = []; // [{ev, tries}]
  const watched = new Map(); // element -> dwell state

  function newId() {
    if (crypto.randomUUID) return crypto.randomUUID(); // secure contexts only
    const b = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(b, (x) => (x + 256).toString(16).slice(1)).join("");
  }

  // Copy into `ev` the fields of `src` it lacks (null/undefined count as lacking).
  function fill(ev, src) {
    for (const k in src) if (ev[k] == null && src[k] != null) ev[k] = src[k];
    return ev;
  }

  /** Any signal: track("rating", {request_id, value: 4, comment}). Returns its event_id. */
  function track(name, fields) {
    const ev = fill({ name }, fields || {});
    fill(ev, { event_id: newId(), ts: Date.now(), source: name === "dwell" ? "implicit" : "user" });
    if (cfg) fill(ev, cfg.base);
    for (const k in ev) if (ev[k] == null) delete ev[k];
    queue.push({ ev, tries: 0 });
    if (queue.length > MAX_QUEUE) queue.splice(0, queue.length - MAX_QUEUE);
    if (cfg && queue.length >= cfg.maxBatch) flush();
    return ev.event_id;
  }

  // Events tracked before init() get its app/user/session here, for good: a retry must
  // resend the very same event.
  function body(items) {
    return JSON.stringify(items.map((i) => fill(i.ev, cfg.base)));
  }

  // A failed batch goes back in front; same event_ids: idempotent.
  function retry(items) {
    queue = items.filter((i) => ++i.tries < MAX_TRIES).concat(queue);
  }

  /** Send now by fetch. Resolves with the HTTP status; 0: network/CORS failure (events
   *  kept); null: nothing to send. */
  function flush() {
    if (!cfg || !queue.length) return Promise.resolve(null);
    const items = queue.splice(0, cfg.maxBatch);
    // text/plain: a "simple" request, no preflight. keepalive: outlives the page.
    const headers = { "Content-Type": "text/plain" };
    return fetch(cfg.url, { method: "POST", body: body(items), headers, keepalive: true,
                            credentials: "omit" }).then(
      (r) => {
        if (r.status === 429 || r.status >= 500) retry(items);
        // Another 4xx (key, origin, events): a resend would not help.
        else if (!r.ok) console.warn("LLMFeedback: refused:", r.status);
        return r.status;
      },
      () => (retry(items), 0) // network error; a CORS refusal looks the same
    );
  }

  // The page hides or goes: beacons are delivered after it is gone (no headers: ?key=).
  function beacon() {
    while (cfg && queue.length) {
      const blob = new Blob([body(queue.splice(0, cfg.maxBatch))], { type: "text/plain" });
      if (!(navigator.sendBeacon && navigator.sendBeacon(cfg.url, blob))) {
        fetch(cfg.url, { method: "POST", body: blob, keepalive: true, credentials: "omit" })
          .catch(() => {});
      }
    }
  }

  // ---- dwell: ms an answer is seen (half of it in view, or half the view for a tall one,
  // page visible). A span ends in one `dwell` event (source implicit) when the answer
  // leaves view or the page hides; an answer's dwell events add up.
  function update(st, now, stop) {
    const vis = !stop && st.inView && document.visibilityState === "visible";
    if (vis && st.since === null) st.since = now;
    else if (!vis && st.since !== null) {
      const ms = Math.round(now - st.since);
      st.since = null;
      if (ms > 0) track("dwell", { request_id: st.requestId, value: ms });
    }
  }

  function inView(e) {
    if (!e.isIntersecting) return false;
    if (e.intersectionRatio >= 0.5) return true;
    return !!e.rootBounds && e.intersectionRect.height >= e.rootBounds.height / 2;
  }

  /** Measure how long `element`, the answer of call `requestId`, is seen. */
  function observe(element, requestId) {
    io = io || new IntersectionObserver((entries) => {
      const now = performance.now();
      for (const e of entries) {
        const st = watched.get(e.target);
        if (st) {
          st.inView = inView(e);
          update(st, now);
        }
      }
    }, { threshold: Array.from({ length: 11 }, (_, i) => i / 10) });
    unobserve(element);
    watched.set(element, { requestId, inView: false, since: null });
    io.observe(element);
  }

  /** Stop measuring `element`, recording the span in progress. */
  function unobserve(element) {
    const st = watched.get(element);
    if (!st) return;
    update(st, performance.now(), true);
    watched.delete(element);
    io.unobserve(element);
  }

  function pageChanged(gone) {
    const now = performance.now();
    watched.forEach((st) => update(st, now, gone));
    if (gone || document.visibilityState === "hidden") beacon();
  }
  document.addEventListener("visibilitychange", () => pageChanged(false));
  window.addEventListener("pagehide", () => pageChanged(true));
  // Back from the back/forward cache: a new span.
  window.addEventListener("pageshow", (e) => e.persisted && pageChanged(false));

  // ---- copy: from inside an element marked data-llm-request-id
  document.addEventListener("copy", (e) => {
    const sel = document.getSelection();
    const at = (sel && sel.rangeCount && sel.anchorNode) || e.target;
    const el = at && (at.nodeType === 1 ? at : at.parentElement);
    const holder = el && el.closest("[data-llm-request-id]");
    if (holder) {
      const chars = String(sel ? sel.toString().length : 0);
      copy(holder.getAttribute("data-llm-request-id"), { metadata: { chars } });
    }
  }, true);

  /** Configure, or reconfigure. Without an endpoint: the gateway serving this script. */
  function init(o) {
    o = o || {};
    let ep = o.endpoint || (script ? script.src.replace(/\/feedback\.js([?#].*)?$/, "") : "");
    ep = ep.replace(/\/+$/, "");
    if (!/\/v1\/feedback$/.test(ep)) ep += "/v1/feedback";
    if (!o.key) console.warn("LLMFeedback: browsers need a publishable key: init({key})");
    cfg = {
      url: ep + (o.key ? "?key=" + encodeURIComponent(o.key) : ""),
      maxBatch: o.maxBatch || 50,
      base: { app: o.app, end_user: o.user, session_id: o.session },
    };
    clearInterval(timer);
    timer = setInterval(flush, o.flushIntervalMs || 2000);
    return api;
  }

  // A signal about one answer: name(requestId, extra), or with a `field`,
  // name(requestId, v, extra). `extra` adds or overrides fields: comment, metadata...
  const about = (name, field, conv = (v) => v) =>
    field
      ? (id, v, extra) => track(name, Object.assign({ request_id: id, [field]: conv(v) }, extra))
      : (id, extra) => track(name, Object.assign({ request_id: id }, extra));
  const copy = about("copy");

  const api = {
    init, track, flush, observe, unobserve,
    shown: about("suggestion_shown"), accepted: about("suggestion_accepted"),
    rejected: about("suggestion_rejected"), copy, share: about("share"),
    regenerate: about("regenerate"),
    rating: about("rating", "value"), // rating(id, 4)
    thumbs: about("thumbs", "value", Boolean), // thumbs(id, true)
    correction: about("correction", "string_value"), // correction(id, "fixed text")
    defect: about("defect", "string_value"), // defect(id, "hallucination")
    dwell: about("dwell", "value"), // dwell(id, ms), as observe() measures
    /** The conversation ended (needs a session: init({session}) or {session_id}). */
    sessionEnd: (extra) => track("session_end", extra),
  };
  window.LLMFeedback = api;
})();
