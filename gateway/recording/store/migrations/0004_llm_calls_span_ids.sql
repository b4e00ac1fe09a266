-- Span ids, so that rows join with traces: the gateway's span and the client's parent span.
ALTER TABLE {db}.llm_calls
    ADD COLUMN IF NOT EXISTS span_id String AFTER trace_id,
    ADD COLUMN IF NOT EXISTS parent_span_id String AFTER span_id
