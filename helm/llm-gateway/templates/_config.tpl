{{/* The model, provider and key name `helm test` uses; nothing else is routed there. */}}
{{- define "llm-gateway.testModel" -}}llm-gateway-helm-test{{- end }}

{{/* The fake upstream's port in the test Pod, and the Service in front of it. */}}
{{- define "llm-gateway.testUpstreamPort" -}}8081{{- end }}
{{- define "llm-gateway.testUpstreamName" -}}
{{- printf "%s-test-upstream" (include "llm-gateway.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The public host names the Ingress and the HTTPRoute serve, as a JSON list. */}}
{{- define "llm-gateway.publicHosts" -}}
{{- $hosts := list }}
{{- if .Values.ingress.enabled }}
{{- range .Values.ingress.hosts }}{{ with .host }}{{ $hosts = append $hosts . }}{{ end }}{{ end }}
{{- range .Values.ingress.tls }}{{ $hosts = concat $hosts (.hosts | default list) }}{{ end }}
{{- end }}
{{- if .Values.httpRoute.enabled }}
{{- $hosts = concat $hosts (.Values.httpRoute.hostnames | default list) }}
{{- end }}
{{- $hosts | uniq | toJson }}
{{- end }}

{{/*
The `auth:` section: the user's, plus the public host names (a request naming them is not
refused as DNS rebinding), the Redis the replicas share, and the key `helm test` calls with.
*/}}
{{- define "llm-gateway.authConfig" -}}
{{- $auth := deepCopy (.Values.config.auth | default dict) }}
{{- $hosts := concat ($auth.allowed_hosts | default list) (include "llm-gateway.publicHosts" . | fromJsonArray) | uniq }}
{{- if $hosts }}{{ $_ := set $auth "allowed_hosts" $hosts }}{{ end }}
{{- if .Values.redis.bundled.enabled }}
{{- $_ := set $auth "redis_url" (printf "redis://:${LLM_GATEWAY_REDIS_PASSWORD:-}@%s-redis:6379/0" (include "llm-gateway.fullname" .)) }}
{{- else if include "llm-gateway.redis" . }}
{{- $_ := set $auth "redis_url" "${LLM_GATEWAY_REDIS_URL:-}" }}
{{- end }}
{{- if .Values.tests.enabled }}
{{- $model := include "llm-gateway.testModel" . }}
{{- $key := dict "name" $model "key" "${LLM_GATEWAY_HELM_TEST_KEY}" "models" (list $model) "rpm" 60 }}
{{- $_ := set $auth "keys" (append ($auth.keys | default list) $key) }}
{{- end }}
{{- toJson $auth }}
{{- end }}

{{/*
`helm test`'s provider and route, put before the user's (or before the zero-config ones,
written out as the gateway would make them: it makes them only when the file names none;
tests/helm/test_helm.py holds the two to the same result). Returns {"providers", "routes"}.
*/}}
{{- define "llm-gateway.testRouting" -}}
{{- $model := include "llm-gateway.testModel" . }}
{{- $providers := deepCopy (.Values.config.providers | default dict) }}
{{- $routes := .Values.config.routes | default list }}
{{- if not (hasKey .Values.config "providers") }}
{{- $providers = dict
  "openai" (dict "kind" "openai" "base_url" "${OPENAI_BASE_URL:-https://api.openai.com/v1}" "api_key" "${OPENAI_API_KEY:-}")
  "anthropic" (dict "kind" "anthropic" "base_url" "${ANTHROPIC_BASE_URL:-https://api.anthropic.com}" "api_key" "${ANTHROPIC_API_KEY:-}") }}
{{- $routes = list (dict "match" "claude*" "provider" "anthropic") (dict "match" "*" "provider" "openai") }}
{{- end }}
{{- $upstream := printf "http://%s.%s.svc:%s/v1" (include "llm-gateway.testUpstreamName" .) .Release.Namespace (include "llm-gateway.testUpstreamPort" .) }}
{{- $_ := set $providers $model (dict "kind" "openai" "base_url" $upstream "api_key" $model "price_as" "" "timeouts" (dict "connect" 5 "first_byte" 10 "total" 20)) }}
{{- toJson (dict "providers" $providers "routes" (prepend $routes (dict "match" $model "provider" $model))) }}
{{- end }}

{{/* The gateway's config file: the user's `config` plus what the chart decides. */}}
{{- define "llm-gateway.config" -}}
{{- $ch := .Values.store.clickhouse }}
{{- $store := dict "kind" "chdb" "path" "/data/store" }}
{{- if include "llm-gateway.clickhouse" . }}
{{- $store = dict "kind" "clickhouse" "url" "${LLM_GATEWAY_STORE_URL}" "username" "${LLM_GATEWAY_STORE_USERNAME}" "password" "${LLM_GATEWAY_STORE_PASSWORD}" "database" $ch.database "async_insert" $ch.asyncInsert }}
{{- if $ch.cluster }}{{ $_ := set $store "cluster" $ch.cluster }}{{ end }}
{{- end }}
{{- $drift := merge (dict "enabled" (and .Values.drift.enabled (not (include "llm-gateway.driftCronJob" .)))) (deepCopy .Values.drift.settings) }}
{{- $config := deepCopy .Values.config }}
{{- $auth := include "llm-gateway.authConfig" . | fromJson }}
{{- if $auth }}{{ $_ := set $config "auth" $auth }}{{ end }}
{{- if .Values.tests.enabled }}
{{- $config = merge (include "llm-gateway.testRouting" . | fromJson) $config }}
{{- end }}
{{- $managed := dict
  "server" (dict "host" "0.0.0.0" "port" (int .Values.gateway.port) "workers" (int .Values.gateway.workers) "shutdown_grace_s" .Values.gateway.shutdownGraceSeconds)
  "store" $store
  "log" (dict "dir" "/data/log")
  "drift" $drift }}
{{- toYaml (merge $managed $config) }}
{{- end }}
