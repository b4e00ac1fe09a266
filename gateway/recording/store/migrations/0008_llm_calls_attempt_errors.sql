-- Why each failed upstream attempt of a call failed ("provider: reason"), in order; the
-- attempt that answered is not listed. `attempts` counts them all.
ALTER TABLE {db}.llm_calls
    ADD COLUMN IF NOT EXISTS attempt_errors Array(String) AFTER attempts
