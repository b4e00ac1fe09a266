"""The request path, one module per step in reading order: `paths` → `headers` →
`exchange` (body, record) → `routing` → `attempts` (hops, deadlines, retries) → `streaming`
(pass-through, usage filter, capture); `proxy` is the ASGI entry that strings them together."""
