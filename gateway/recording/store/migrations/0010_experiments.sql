-- Experiments (gateway/experiments, collectors/experiments): the experiment a call was
-- assigned to and its variant; empty for calls in no experiment. The per-variant view
-- `llm_experiment_variants` is rendered with the others (collectors/views).
ALTER TABLE {db}.llm_calls
    ADD COLUMN IF NOT EXISTS experiment LowCardinality(String) AFTER properties,
    ADD COLUMN IF NOT EXISTS variant LowCardinality(String) AFTER experiment
