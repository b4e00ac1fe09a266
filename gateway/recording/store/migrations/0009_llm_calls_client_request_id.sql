-- The client's own X-Request-Id, kept beside the id the call is stored under: a repeat of
-- an id the gateway already used gets a fresh request_id (see gateway/ids.py RequestIds).
ALTER TABLE {db}.llm_calls
    ADD COLUMN IF NOT EXISTS client_request_id String AFTER request_id
