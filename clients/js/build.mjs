// Builds the package's two forms from the script the gateway serves at /feedback.js
// (collectors/static/feedback.js, the one source): feedback.js, the classic script as is,
// and feedback.mjs, an ES module exporting the same collector. Run by `npm pack` (prepack);
// `node build.mjs DIR` writes them to DIR instead.
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
const esm = `${header}// The ES module form, generated from feedback.js by build.mjs: edit feedback.js.
// In a page it is the same collector as the classic script: one per page, whichever loads
// first. Without a browser (SSR, tests) the export is undefined. As a module it cannot see
// its own URL: pass init({endpoint}) with the gateway's address.
function create() {
${body}  return api;
}

export const LLMFeedback =
  typeof window === "undefined" ? undefined : window.LLMFeedback || (window.LLMFeedback = create());
export default LLMFeedback;
`;
mkdirSync(out, { recursive: true });
writeFileSync(join(out, "feedback.mjs"), esm);
writeFileSync(join(out, "feedback.js"), classic);
