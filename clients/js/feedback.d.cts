// Types of the CommonJS entry: `const LLMFeedback = require("llm-gateway-feedback")` is the
// collector (also as `.default` and `.LLMFeedback`). The types are those of feedback.d.ts.
type Api = import("./feedback.js").LLMFeedbackApi;

declare const LLMFeedback: Api & { readonly default: Api; readonly LLMFeedback: Api };
declare namespace LLMFeedback {
  export type LLMFeedbackApi = import("./feedback.js").LLMFeedbackApi;
  export type InitOptions = import("./feedback.js").InitOptions;
  export type EventFields = import("./feedback.js").EventFields;
  export type Extra = import("./feedback.js").Extra;
}
export = LLMFeedback;
