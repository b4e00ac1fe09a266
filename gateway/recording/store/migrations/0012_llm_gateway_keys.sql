-- Gateway keys (gateway/access): one row per change of a key; the newest version wins.
-- Only the SHA-256 of a secret is stored, never the secret. `limits` is JSON, so that new
-- kinds of limit need no migration. Read with FINAL (or argMax by version).
-- shard_by: cityHash64(key_id)
CREATE TABLE IF NOT EXISTS {db}.llm_gateway_keys
(
    key_id String,
    key_hash String,
    name String,
    app String,
    team String,
    hint String,
    limits String,
    created_at DateTime64(3, 'UTC'),
    revoked Bool,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY key_id
