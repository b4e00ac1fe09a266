-- The response cache (gateway/cache): what it did for a call (hit, miss, bypass or
-- refresh, empty when it had no part in the call), and what a hit saved: the price of the
-- usage its stored answer carries. A hit's own cost_usd is 0. cost_saved_usd is NULL when
-- the price is unknown and for rows written before this migration, 0 for other calls.
ALTER TABLE {db}.llm_calls
    ADD COLUMN IF NOT EXISTS cache_status LowCardinality(String) AFTER fallback_used,
    ADD COLUMN IF NOT EXISTS cost_saved_usd Nullable(Float64) AFTER price_source
