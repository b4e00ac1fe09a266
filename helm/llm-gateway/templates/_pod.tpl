{{/*
Environment shared by the gateway, the migration Job and the drift CronJob. Takes
(dict "ctx" $ "suffix" S): S names the hook's copies of the chart's Secrets.
*/}}
{{- define "llm-gateway.env" -}}
{{- $suffix := .suffix | default "" }}
{{- with .ctx }}
- name: LLM_GATEWAY_CONFIG
  value: /etc/llm-gateway/config.yaml
- name: HOME
  value: /data
{{- if include "llm-gateway.clickhouse" . }}
{{- $keys := .Values.store.clickhouse.secretKeys }}
{{- $storeSecret := printf "%s%s" (include "llm-gateway.storeSecretName" .) (ternary "" $suffix (not (empty .Values.store.clickhouse.existingSecret))) }}
{{- range $var, $key := dict "LLM_GATEWAY_STORE_URL" $keys.url "LLM_GATEWAY_STORE_USERNAME" $keys.username "LLM_GATEWAY_STORE_PASSWORD" $keys.password }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $storeSecret }}
      key: {{ $key }}
{{- end }}
{{- end }}
{{- if .Values.tests.enabled }}
- name: LLM_GATEWAY_HELM_TEST_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "llm-gateway.testKeySecretName" . }}{{ ternary "" $suffix (not (empty .Values.tests.existingKeySecret)) }}
      key: key
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Redis the gateway's counters live in: its password or URL, from a Secret. */}}
{{- define "llm-gateway.redisEnv" -}}
{{- if .Values.redis.bundled.enabled }}
- name: LLM_GATEWAY_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "llm-gateway.redisSecretName" . }}
      key: password
{{- else if include "llm-gateway.redis" . }}
- name: LLM_GATEWAY_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "llm-gateway.redisSecretName" . }}
      key: {{ ternary .Values.redis.existingSecretKey "url" (not (empty .Values.redis.existingSecret)) }}
{{- end }}
{{- end }}

{{- define "llm-gateway.envFrom" -}}
{{- $suffix := ternary "" (.suffix | default "") (empty .ctx.Values.providerKeys.existingSecret | not) }}
{{- with .ctx }}
{{- if or .Values.providerKeys.existingSecret .Values.providerKeys.values }}
- secretRef:
    name: {{ include "llm-gateway.providerSecretName" . }}{{ $suffix }}
{{- end }}
{{- with .Values.extraEnvFrom }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end }}

{{/* The volumes every container of the chart mounts (read-only root filesystem). */}}
{{- define "llm-gateway.volumeMounts" -}}
- name: config
  mountPath: /etc/llm-gateway
  readOnly: true
- name: data
  mountPath: /data
- name: tmp
  mountPath: /tmp
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The volumes behind those mounts. Takes (dict "ctx" $ "configMap" NAME "claim" BOOL): with
a claim, `data` is the StatefulSet's volume claim, otherwise an emptyDir.
*/}}
{{- define "llm-gateway.volumes" -}}
- name: config
  configMap:
    name: {{ .configMap }}
- name: tmp
  emptyDir: {}
{{- if not .claim }}
- name: data
  emptyDir: {}
{{- end }}
{{- with .ctx.Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
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

{{/* The gateway pod, of the StatefulSet. */}}
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
        {{- with include "llm-gateway.redisEnv" . | trim }}
        {{- . | nindent 8 }}
        {{- end }}
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
    {{- with .Values.extraContainers }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  volumes:
    {{- include "llm-gateway.volumes" (dict "ctx" . "configMap" (include "llm-gateway.fullname" .) "claim" .Values.persistence.enabled) | nindent 4 }}
{{- end }}
