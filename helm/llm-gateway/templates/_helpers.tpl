{{/* Names and labels. */}}
{{- define "llm-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llm-gateway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "llm-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llm-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The gateway's pods only, not the Job's or CronJob's. */}}
{{- define "llm-gateway.gatewaySelectorLabels" -}}
{{ include "llm-gateway.selectorLabels" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "llm-gateway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "llm-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "llm-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "llm-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "llm-gateway.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "llm-gateway.clickhouse" -}}
{{- if eq .Values.store.mode "clickhouse" }}true{{ end }}
{{- end }}

{{- define "llm-gateway.storeSecretName" -}}
{{- .Values.store.clickhouse.existingSecret | default (printf "%s-store" (include "llm-gateway.fullname" .)) }}
{{- end }}

{{- define "llm-gateway.providerSecretName" -}}
{{- .Values.providerKeys.existingSecret | default (printf "%s-providers" (include "llm-gateway.fullname" .)) }}
{{- end }}

{{/* The Secret with Redis's URL (an existing Redis) or password (the bundled one). */}}
{{- define "llm-gateway.redisSecretName" -}}
{{- $own := printf "%s-redis" (include "llm-gateway.fullname" .) }}
{{- if .Values.redis.bundled.enabled }}
{{- .Values.redis.bundled.existingSecret | default $own }}
{{- else }}
{{- .Values.redis.existingSecret | default $own }}
{{- end }}
{{- end }}

{{/* The Secret with the gateway key `helm test` calls with. */}}
{{- define "llm-gateway.testKeySecretName" -}}
{{- .Values.tests.existingKeySecret | default (printf "%s-helm-test" (include "llm-gateway.fullname" .)) }}
{{- end }}

{{/* Whether the gateway uses Redis, one of its own or the bundled one. */}}
{{- define "llm-gateway.redis" -}}
{{- if or .Values.redis.bundled.enabled .Values.redis.url .Values.redis.existingSecret }}true{{ end }}
{{- end }}

{{/*
A generated secret value that stays what it is across upgrades: the value already stored
under `key` in the Secret `name`, else `new`. Takes (dict "ctx" $ "name" N "key" K "new" V).
`helm template` cannot look the Secret up, so each of its renders makes a new value.
*/}}
{{- define "llm-gateway.keptSecretValue" -}}
{{- $found := lookup "v1" "Secret" .ctx.Release.Namespace .name }}
{{- $data := (and $found $found.data) | default dict }}
{{- if hasKey $data .key }}{{ index $data .key | b64dec }}{{ else }}{{ .new }}{{ end }}
{{- end }}

{{/*
The Secrets the chart creates from values (none for an existingSecret). Takes (dict "ctx" $
"hook" BOOL): the migration hook runs before the release's own Secrets exist, so it gets
copies of its own, named with a "-migrate" suffix (Redis's aside: migrating needs none).
*/}}
{{- define "llm-gateway.secrets" -}}
{{- $suffix := ternary "-migrate" "" .hook }}
{{- $hook := .hook }}
{{- with .ctx }}
{{- if and (include "llm-gateway.clickhouse" .) (not .Values.store.clickhouse.existingSecret) }}
{{- $ch := .Values.store.clickhouse }}
---
apiVersion: v1
kind: Secret
metadata:
  name: {{ include "llm-gateway.storeSecretName" . }}{{ $suffix }}
  labels:
    {{- include "llm-gateway.labels" . | nindent 4 }}
  {{- if $hook }}
  annotations:
    {{- include "llm-gateway.hookAnnotations" "-10" | nindent 4 }}
  {{- end }}
type: Opaque
stringData:
  {{ $ch.secretKeys.url }}: {{ $ch.url | quote }}
  {{ $ch.secretKeys.username }}: {{ $ch.username | quote }}
  {{ $ch.secretKeys.password }}: {{ $ch.password | quote }}
{{- end }}
{{- if and .Values.providerKeys.values (not .Values.providerKeys.existingSecret) }}
---
apiVersion: v1
kind: Secret
metadata:
  name: {{ include "llm-gateway.providerSecretName" . }}{{ $suffix }}
  labels:
    {{- include "llm-gateway.labels" . | nindent 4 }}
  {{- if $hook }}
  annotations:
    {{- include "llm-gateway.hookAnnotations" "-10" | nindent 4 }}
  {{- end }}
type: Opaque
stringData:
  {{- range $k, $v := .Values.providerKeys.values }}
  {{ $k }}: {{ $v | quote }}
  {{- end }}
{{- end }}
{{- if and .Values.tests.enabled (not .Values.tests.existingKeySecret) }}
{{- $name := printf "%s%s" (include "llm-gateway.testKeySecretName" .) $suffix }}
---
apiVersion: v1
kind: Secret
metadata:
  name: {{ $name }}
  labels:
    {{- include "llm-gateway.labels" . | nindent 4 }}
  {{- if $hook }}
  annotations:
    {{- include "llm-gateway.hookAnnotations" "-10" | nindent 4 }}
  {{- end }}
type: Opaque
stringData:
  key: {{ include "llm-gateway.keptSecretValue" (dict "ctx" . "name" $name "key" "key" "new" (printf "lgw_%s" (randAlphaNum 43))) | quote }}
{{- end }}
{{- if and (not $hook) (include "llm-gateway.redis" .) }}
{{- $redis := .Values.redis }}
{{- if and $redis.bundled.enabled (not $redis.bundled.existingSecret) }}
{{- $name := include "llm-gateway.redisSecretName" . }}
---
apiVersion: v1
kind: Secret
metadata:
  name: {{ $name }}
  labels:
    {{- include "llm-gateway.labels" . | nindent 4 }}
    app.kubernetes.io/component: redis
type: Opaque
stringData:
  password: {{ include "llm-gateway.keptSecretValue" (dict "ctx" . "name" $name "key" "password" "new" (randAlphaNum 32)) | quote }}
{{- else if and (not $redis.bundled.enabled) (not $redis.existingSecret) }}
---
apiVersion: v1
kind: Secret
metadata:
  name: {{ include "llm-gateway.redisSecretName" . }}
  labels:
    {{- include "llm-gateway.labels" . | nindent 4 }}
type: Opaque
stringData:
  url: {{ $redis.url | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* A pre-install/pre-upgrade hook of the given weight, replaced on the next run. */}}
{{- define "llm-gateway.hookAnnotations" -}}
helm.sh/hook: pre-install,pre-upgrade
helm.sh/hook-weight: {{ . | quote }}
helm.sh/hook-delete-policy: before-hook-creation
{{- end }}

{{/* Whether drift runs as a CronJob (ClickHouse) rather than inside the gateway. */}}
{{- define "llm-gateway.driftCronJob" -}}
{{- if and .Values.drift.enabled (include "llm-gateway.clickhouse" .) }}true{{ end }}
{{- end }}
