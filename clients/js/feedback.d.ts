// Types of llm-gateway's feedback collector: the ES module (`import LLMFeedback from
// "llm-gateway-feedback"`, in a page or in Node) and the classic script
// (`window.LLMFeedback`). feedback.d.cts types the CommonJS entry with the same names.

/** Options of `init`. */
export interface InitOptions {
  /** A feedback key: publishable (`pk_...`) in browsers, which need one; in Node a server
   *  key, or none when the gateway has no feedback keys. */
  key?: string;
  /** The gateway's address, e.g. "https://gateway.example.com". Default: where the classic
   *  script was loaded from (the ES module cannot know: pass it). */
  endpoint?: string;
  app?: string;
  /** The end user's id (sent as `end_user`). */
  user?: string;
  /** The conversation's id (sent as `session_id`). */
  session?: string;
  /** Events per request (default 50). */
  maxBatch?: number;
  /** How often queued events are sent (default 2000 ms). */
  flushIntervalMs?: number;
}

/** The fields of an event (see the gateway's /v1/feedback/openapi.json). */
export interface EventFields {
  request_id?: string;
  session_id?: string;
  event_id?: string;
  /** Epoch milliseconds or seconds (default: now). */
  ts?: number;
  value?: number | boolean | null;
  string_value?: string;
  data_type?: "numeric" | "boolean" | "categorical" | "text";
  source?: "user" | "implicit";
  comment?: string;
  end_user?: string;
  app?: string;
  metadata?: Record<string, string>;
}

/** Fields added to (or overriding) those of a helper's event. */
export type Extra = Omit<EventFields, "request_id">;

/** Each signal helper returns the event's id. */
export interface LLMFeedbackApi {
  /** Configure, or reconfigure. */
  init(options?: InitOptions): LLMFeedbackApi;
  /** Any signal, by name: track("rating", {request_id, value: 4}). */
  track(name: string, fields?: EventFields): string;
  /** Send now: the HTTP status, 0 on a network or CORS failure (events kept), null when
   *  there was nothing to send. */
  flush(): Promise<number | null>;
  /** Measure how long `element`, the answer of call `requestId`, is seen (dwell). In a
   *  page only. */
  observe(element: Element, requestId: string): void;
  /** Stop measuring `element`, recording the span in progress. */
  unobserve(element: Element): void;
  shown(requestId: string, extra?: Extra): string;
  accepted(requestId: string, extra?: Extra): string;
  rejected(requestId: string, extra?: Extra): string;
  copy(requestId: string, extra?: Extra): string;
  share(requestId: string, extra?: Extra): string;
  regenerate(requestId: string, extra?: Extra): string;
  rating(requestId: string, value: number, extra?: Extra): string;
  thumbs(requestId: string, up: boolean, extra?: Extra): string;
  correction(requestId: string, text: string, extra?: Extra): string;
  defect(requestId: string, category: string, extra?: Extra): string;
  dwell(requestId: string, ms: number, extra?: Extra): string;
  /** The conversation ended (needs a session: init({session}) or {session_id}). */
  sessionEnd(extra?: EventFields): string;
}

/** The collector: the page's one, or in Node the process's (its periodic flush does not
 *  keep the process alive; what is queued is sent before it exits). */
export declare const LLMFeedback: LLMFeedbackApi;
export default LLMFeedback;

declare global {
  interface Window {
    LLMFeedback: LLMFeedbackApi;
  }
}
