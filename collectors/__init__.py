"""Off the request path: what end users did with the answers, and what changed.

- `intake/`: `POST /v1/feedback` (validation, keys and origins, rate limits, OpenAPI).
- `signals.py`: the known signals, once: their data types and the view columns they feed.
- `views/`: `llm_call_feedback` and `llm_sessions`, rendered from the registry and
  (re)created by the store's migration step.
- `drift/`: the drift job (`llm-gateway drift`, or periodic in the gateway).
- `report/`: plain-text reports for product teams (`llm-gateway report`).
- `static/feedback.js`: the browser collector the gateway serves (its npm package and the
  Python client are in `clients/`).
"""
