// Builds the package's forms from the script the gateway serves at /feedback.js
// (collectors/static/feedback.js, the one source): feedback.js, the classic script as is;
// feedback.mjs (ES module) and feedback.cjs (CommonJS), the same collector for bundlers and
// for Node. Run by `npm pack` (prepack); `node build.mjs DIR` writes them to DIR instead.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] || here;
const classic = readFileSync(join(here, "..", "..", "collectors", "static", "feedback.js"), "utf8");

const wrapper = "(function () {\n";
const open = "  if (window.LLMFeedback) return; // included twice\n";
const close = "  window.LLMFeedback = api;\n})();\n";
const start = classic.indexOf(open);
const end = classic.lastIndexOf(close);
if (classic.indexOf(wrapper) < 0 || start < 0 || end !== classic.length - close.length) {
  throw new Error("feedback.js: its wrapper changed; update build.mjs to match");
}
const header = classic.slice(0, classic.indexOf(wrapper));
const body = classic.slice(start + open.length, end);

// The collector, made for a page or for Node. In a page it is the page's one collector,
// whichever form loads first. In Node (a server, SSR, a script) there is no page: the
// page's events (visibility, copy) never fire, and the periodic flush does not keep the
// process alive; what is queued is sent when the process runs out of work (beforeExit).
const core = `${header}// Generated from feedback.js by build.mjs: edit feedback.js. As a module it cannot see
// its own URL: pass init({endpoint}) with the gateway's address.
function create(window, document, navigator, setInterval) {
${body}  return api;
}

function inNode() {
  const noop = () => {};
  const page = { addEventListener: noop };
  const doc = { currentScript: null, visibilityState: "visible", addEventListener: noop };
  const every = (fn, ms) => {
    const t = setInterval(fn, ms);
    if (t && t.unref) t.unref();
    return t;
  };
  const api = create(page, doc, {}, every);
  process.on("beforeExit", () => { api.flush(); });
  return api;
}

function inPage() {
  const nav = typeof navigator === "undefined" ? {} : navigator;
  return window.LLMFeedback || (window.LLMFeedback = create(window, document, nav, setInterval));
}

const LLMFeedback =
  typeof window !== "undefined" && typeof document !== "undefined" ? inPage() : inNode();
`;
const esm = `${core}
export { LLMFeedback };
export default LLMFeedback;
`;
// require() gives the collector itself; .default and .LLMFeedback name it too (not
// enumerable: the collector's keys stay its methods).
const cjs = `"use strict";
${core}
Object.defineProperty(LLMFeedback, "default", { value: LLMFeedback });
Object.defineProperty(LLMFeedback, "LLMFeedback", { value: LLMFeedback });
module.exports = LLMFeedback;
`;
mkdirSync(out, { recursive: true });
writeFileSync(join(out, "feedback.mjs"), esm);
writeFileSync(join(out, "feedback.cjs"), cjs);
writeFileSync(join(out, "feedback.js"), classic);
