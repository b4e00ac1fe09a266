{{/*
Values the chart refuses, each with the reason. values.schema.json catches wrong types and
names; these are the combinations a schema cannot say, and the values a past version had.
*/}}
{{- define "llm-gateway.validate" -}}
{{- range $old, $new := dict "env" "extraEnv" "envFrom" "extraEnvFrom" }}
{{- if hasKey $.Values $old }}
{{- fail (printf "%s was renamed %s in chart 0.2.0: move its entries there" $old $new) }}
{{- end }}
{{- end }}
{{- if hasKey .Values.store "logVolumeSizeLimit" }}
{{- fail "store.logVolumeSizeLimit was removed in chart 0.2.0: the record log is on the StatefulSet's volume claim in every store mode, sized by persistence.size" }}
{{- end }}
{{- if include "llm-gateway.clickhouse" . }}
{{- if and (not .Values.store.clickhouse.existingSecret) (not .Values.store.clickhouse.url) }}
{{- fail "store.mode=clickhouse needs the server: set store.clickhouse.url (and username/password), or store.clickhouse.existingSecret" }}
{{- end }}
{{- else }}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail (printf "store.mode=embedded runs one replica: the embedded chDB store lives in a single pod's volume and only one process can open it (replicaCount is %d). Use store.mode=clickhouse to run several replicas." (int .Values.replicaCount)) }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- fail "store.mode=embedded cannot autoscale: the embedded chDB store lives in a single pod's volume and only one process can open it. Set autoscaling.enabled=false, or use store.mode=clickhouse." }}
{{- end }}
{{- if gt (int .Values.gateway.workers) 1 }}
{{- fail "store.mode=embedded runs one worker process (gateway.workers=1): the embedded chDB store is a single-process engine. Use store.mode=clickhouse for several workers." }}
{{- end }}
{{- end }}
{{- range $key := list "server" "store" "log" }}
{{- if hasKey $.Values.config $key }}
{{- fail (printf "config.%s is set by the chart: use the gateway.* and store.* values instead" $key) }}
{{- end }}
{{- end }}
{{- if hasKey .Values.config "drift" }}
{{- fail "config.drift is set by the chart: use drift.enabled and drift.settings instead" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- $redis := .Values.redis }}
{{- if and $redis.url $redis.existingSecret }}
{{- fail "redis.url and redis.existingSecret both name a Redis: set one" }}
{{- end }}
{{- if and $redis.bundled.enabled (or $redis.url $redis.existingSecret) }}
{{- fail "redis.bundled.enabled runs a Redis for the gateway: leave redis.url and redis.existingSecret empty, or turn the bundled one off to use yours" }}
{{- end }}
{{- if and (include "llm-gateway.redis" .) (hasKey (.Values.config.auth | default dict) "redis_url") }}
{{- fail "config.auth.redis_url is set by the chart when redis.* names a Redis: remove it from config" }}
{{- end }}
{{- if and .Values.tests.enabled (ne (hasKey .Values.config "providers") (hasKey .Values.config "routes")) }}
{{- fail "tests.enabled adds a provider and a route for the test's model to the gateway config, which then needs both config.providers and config.routes (or neither: the zero-config providers and routes are written out): declare the one that is missing" }}
{{- end }}
{{- end }}
