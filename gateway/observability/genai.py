"""The OpenTelemetry GenAI semantic conventions the gateway follows, in one place: metric
names (as an OTel-to-Prometheus exporter spells them), span attribute names and the
spec's histogram bucket boundaries. Used by metrics, tracing and drift."""

from __future__ import annotations

# Metrics (Prometheus spelling of gen_ai.client.*)
OPERATION_DURATION = "gen_ai_client_operation_duration_seconds"
TOKEN_USAGE = "gen_ai_client_token_usage"
TIME_TO_FIRST_CHUNK = "gen_ai_client_operation_time_to_first_chunk_seconds"

# Metric labels
L_OPERATION = "gen_ai_operation_name"
L_PROVIDER = "gen_ai_provider_name"
L_REQUEST_MODEL = "gen_ai_request_model"
L_TOKEN_TYPE = "gen_ai_token_type"

# Span attributes
OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
CACHE_CREATION_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
TIME_TO_FIRST_CHUNK_ATTR = "gen_ai.response.time_to_first_chunk"
ERROR_TYPE = "error.type"

# The spec's advisory bucket boundaries.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)  # fmt: skip
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)  # fmt: skip
