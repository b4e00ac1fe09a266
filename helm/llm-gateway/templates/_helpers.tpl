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

{{/*
The Secrets the chart creates from values (none for an existingSecret). Takes (dict "ctx" $
"hook" BOOL): the migration hook runs before the release's own Secrets exist, so it gets
copies of its own, named with a "-migrate" suffix.
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

{{/*
Values the chart refuses, each with the reason. values.schema.json catches wrong types and
names; these are the combinations a schema cannot say.
*/}}
{{- define "llm-gateway.validate" -}}
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
{{- $managed := dict
  "server" (dict "host" "0.0.0.0" "port" (int .Values.gateway.port) "workers" (int .Values.gateway.workers) "shutdown_grace_s" .Values.gateway.shutdownGraceSeconds)
  "store" $store
  "log" (dict "dir" "/data/log")
  "drift" $drift }}
{{- toYaml (merge $managed (deepCopy .Values.config)) }}
{{- end }}

{{/*
Environment shared by the gateway, the migration Job and the drift CronJob. Takes
(dict "ctx" $ "suffix" S): S names the hook's copies of the chart's Secrets.
*/}}
{{- define "llm-gateway.env" -}}
{{- $suffix := ternary "" (.suffix | default "") (empty .ctx.Values.store.clickhouse.existingSecret | not) }}
{{- $storeSecret := printf "%s%s" (include "llm-gateway.storeSecretName" .ctx) $suffix }}
{{- with .ctx }}
- name: LLM_GATEWAY_CONFIG
  value: /etc/llm-gateway/config.yaml
- name: HOME
  value: /data
{{- if include "llm-gateway.clickhouse" . }}
{{- $keys := .Values.store.clickhouse.secretKeys }}
{{- range $var, $key := dict "LLM_GATEWAY_STORE_URL" $keys.url "LLM_GATEWAY_STORE_USERNAME" $keys.username "LLM_GATEWAY_STORE_PASSWORD" $keys.password }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $storeSecret }}
      key: {{ $key }}
{{- end }}
{{- end }}
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end }}

{{- define "llm-gateway.envFrom" -}}
{{- $suffix := ternary "" (.suffix | default "") (empty .ctx.Values.providerKeys.existingSecret | not) }}
{{- with .ctx }}
{{- if or .Values.providerKeys.existingSecret .Values.providerKeys.values }}
- secretRef:
    name: {{ include "llm-gateway.providerSecretName" . }}{{ $suffix }}
{{- end }}
{{- with .Values.envFrom }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end }}

{{/* The scratch volumes every container of the chart mounts (read-only root filesystem). */}}
{{- define "llm-gateway.volumeMounts" -}}
- name: config
  mountPath: /etc/llm-gateway
  readOnly: true
- name: data
  mountPath: /data
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* Pod settings shared by every pod of the chart, the service account aside. */}}
{{- define "llm-gateway.podSecurity" -}}
automountServiceAccountToken: false
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* A container running one `llm-gateway` command: the Job and the CronJob. */}}
{{- define "llm-gateway.commandContainer" -}}
- name: {{ .name }}
  image: {{ include "llm-gateway.image" .ctx }}
  imagePullPolicy: {{ .ctx.Values.image.pullPolicy }}
  args: {{ toJson .args }}
  env:
    {{- include "llm-gateway.env" (dict "ctx" .ctx "suffix" .suffix) | trim | nindent 4 }}
  {{- with include "llm-gateway.envFrom" (dict "ctx" .ctx "suffix" .suffix) | trim }}
  envFrom:
    {{- . | nindent 4 }}
  {{- end }}
  {{- with .ctx.Values.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    {{- include "llm-gateway.volumeMounts" .ctx | nindent 4 }}
{{- end }}

{{/* The gateway pod, for the Deployment (ClickHouse) and the StatefulSet (embedded). */}}
{{- define "llm-gateway.podTemplate" -}}
metadata:
  annotations:
    checksum/config: {{ include "llm-gateway.config" . | sha256sum }}
    checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  labels:
    {{- include "llm-gateway.gatewaySelectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "llm-gateway.serviceAccountName" . }}
  {{- include "llm-gateway.podSecurity" . | nindent 2 }}
  # The pause before SIGTERM, the streams' grace, then the record flush.
  terminationGracePeriodSeconds: {{ add .Values.gateway.preStopSleepSeconds .Values.gateway.shutdownGraceSeconds .Values.gateway.flushSeconds }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: gateway
      image: {{ include "llm-gateway.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: ["serve"]
      ports:
        - name: http
          containerPort: {{ .Values.gateway.port }}
          protocol: TCP
      env:
        {{- include "llm-gateway.env" (dict "ctx" .) | trim | nindent 8 }}
      {{- with include "llm-gateway.envFrom" (dict "ctx" .) | trim }}
      envFrom:
        {{- . | nindent 8 }}
      {{- end }}
      {{- with .Values.startupProbe }}
      startupProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.livenessProbe }}
      livenessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.readinessProbe }}
      readinessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if .Values.gateway.preStopSleepSeconds }}
      lifecycle:
        preStop:
          exec:
            command: ["sleep", "{{ .Values.gateway.preStopSleepSeconds }}"]
      {{- end }}
      {{- with .Values.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        {{- include "llm-gateway.volumeMounts" . | nindent 8 }}
  volumes:
    - name: config
      configMap:
        name: {{ include "llm-gateway.fullname" . }}
    - name: tmp
      emptyDir: {}
    {{- if include "llm-gateway.clickhouse" . }}
    - name: data
      emptyDir:
        sizeLimit: {{ .Values.store.logVolumeSizeLimit }}
    {{- else if not .Values.persistence.enabled }}
    - name: data
      emptyDir: {}
    {{- end }}
{{- end }}
