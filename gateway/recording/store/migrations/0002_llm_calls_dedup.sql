-- Insert deduplication for non-replicated tables (Replicated ones have it by default): a
-- batch replayed with the token it was first sent with is dropped, so a replay never
-- shows a duplicate row, not even before merges.
ALTER TABLE {db}.llm_calls MODIFY SETTING non_replicated_deduplication_window = 10000
