-- The dialects on both sides of a call: the client's API and the upstream's (they differ
-- when the gateway translated the call, e.g. the OpenAI SDK calling a Claude model).
ALTER TABLE {db}.llm_calls
    ADD COLUMN IF NOT EXISTS client_api LowCardinality(String) AFTER operation,
    ADD COLUMN IF NOT EXISTS upstream_api LowCardinality(String) AFTER client_api
