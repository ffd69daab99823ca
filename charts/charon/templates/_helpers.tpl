{{/* Names: every name is at most 63 characters with no trailing dash. */}}

{{- define "charon.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "charon.fullname" -}}
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

{{/* Per-component names; suffixes are kept by truncating the prefix. */}}
{{- define "charon.router.fullname" -}}
{{- printf "%s-router" (include "charon.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}
{{- define "charon.router.internalName" -}}
{{- printf "%s-router-internal" (include "charon.fullname" . | trunc 47 | trimSuffix "-") }}
{{- end }}
{{- define "charon.worker.fullname" -}}
{{- printf "%s-worker" (include "charon.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}
{{- define "charon.worker.metricsName" -}}
{{- printf "%s-worker-metrics" (include "charon.fullname" . | trunc 48 | trimSuffix "-") }}
{{- end }}
{{- define "charon.gateway.fullname" -}}
{{- printf "%s-gateway" (include "charon.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{- define "charon.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: minimal, because Deployment selectors are immutable. */}}
{{- define "charon.selectorLabels" -}}
app.kubernetes.io/name: {{ include "charon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "charon.labels" -}}
helm.sh/chart: {{ include "charon.chart" . }}
{{ include "charon.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: charon
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Usage: include "charon.componentLabels" (dict "ctx" $ "component" "router") */}}
{{- define "charon.componentLabels" -}}
{{ include "charon.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- define "charon.componentSelector" -}}
{{ include "charon.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}


{{- define "charon.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "charon.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Usage: include "charon.image" (dict "image" .Values.router.image "ctx" $) */}}
{{- define "charon.image" -}}
{{- $tag := default .ctx.Chart.AppVersion .image.tag }}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/* Endpoints the chart wires together. */}}
{{- define "charon.router.workerEndpoint" -}}
{{- printf "tcp://%s.%s.svc:%d" (include "charon.router.internalName" .) .Release.Namespace (int .Values.router.workerPort) }}
{{- end }}
{{- define "charon.router.clientEndpoint" -}}
{{- printf "tcp://%s.%s.svc:%d" (include "charon.router.fullname" .) .Release.Namespace (int .Values.router.service.port) }}
{{- end }}

{{/* The worker count that is at least running: the autoscaler's minimum when one owns it. */}}
{{- define "charon.worker.minReplicas" -}}
{{- if .Values.autoscaling.keda.enabled }}
{{- .Values.autoscaling.keda.minReplicaCount }}
{{- else if .Values.autoscaling.hpa.enabled }}
{{- .Values.autoscaling.hpa.minReplicas }}
{{- else }}
{{- .Values.worker.replicas }}
{{- end }}
{{- end }}

{{/* Renders one environment value as the settings loader parses it (numbers without exponents). */}}
{{- define "charon.envValue" -}}
{{- if kindIs "string" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/*
The container environment: chart-derived CHARON_* defaults for the role, overridden by the
`config` values, then extraEnv. Usage:
  include "charon.env" (dict "ctx" $ "defaults" (dict "CHARON_ROUTER__BIND" "tcp://*:5555") "extra" .Values.router.extraEnv)
*/}}
{{- define "charon.env" -}}
{{- $env := dict }}
{{- range $k, $v := .defaults }}
{{- $_ := set $env $k (include "charon.envValue" $v) }}
{{- end }}
{{- range $section, $fields := .ctx.Values.config }}
{{- range $field, $v := $fields }}
{{- if not (kindIs "invalid" $v) }}
{{- $_ := set $env (printf "CHARON_%s__%s" (upper $section) (upper $field)) (include "charon.envValue" $v) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $k := keys $env | sortAlpha }}
- name: {{ $k }}
  value: {{ get $env $k | quote }}
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "charon.drainGraceSeconds" -}}
{{- $cfg := default (dict) .Values.config.worker }}
{{- if hasKey $cfg "drain_grace_s" }}{{ $cfg.drain_grace_s }}{{ else }}25{{ end }}
{{- end }}

{{- define "charon.worker.terminationGracePeriodSeconds" -}}
{{- add (ceil (include "charon.drainGraceSeconds" . | float64)) .Values.worker.drainMarginSeconds }}
{{- end }}

{{/* Probes on the metrics port. */}}
{{- define "charon.probes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: 5
  failureThreshold: {{ max 1 (div .startupSeconds 5) }}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end }}

{{- define "charon.podScheduling" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Mutually exclusive toggles fail the render with one clear message. */}}
{{- define "charon.validate" -}}
{{- include "charon.curve.validate" . }}
{{- if and .Values.autoscaling.keda.enabled .Values.autoscaling.hpa.enabled }}
{{- fail "autoscaling.keda.enabled and autoscaling.hpa.enabled are mutually exclusive: enable one" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled }}
{{- fail "metrics.serviceMonitor.enabled and metrics.podMonitor.enabled are mutually exclusive: enable one (both would scrape every pod twice)" }}
{{- end }}
{{- if eq (toString (dig "metrics" "enabled" true (.Values.config | default dict))) "false" }}
{{- fail "config.metrics.enabled=false switches off the /healthz and /readyz endpoints the probes use: keep it on" }}
{{- end }}
{{- if and .Values.autoscaling.keda.enabled (lt (int .Values.autoscaling.keda.maxReplicaCount) (int .Values.autoscaling.keda.minReplicaCount)) }}
{{- fail "autoscaling.keda.maxReplicaCount must be >= autoscaling.keda.minReplicaCount" }}
{{- end }}
{{- if and .Values.autoscaling.hpa.enabled (lt (int .Values.autoscaling.hpa.maxReplicas) (int .Values.autoscaling.hpa.minReplicas)) }}
{{- fail "autoscaling.hpa.maxReplicas must be >= autoscaling.hpa.minReplicas" }}
{{- end }}
{{- end }}

{{- define "charon.monitorRelabelings" -}}
{{- /* Stable series labels the alert rules and the dashboard select on, the same under both monitors. */ -}}
- action: replace
  targetLabel: charon_release
  replacement: {{ .Release.Name }}
- action: replace
  sourceLabels: [__meta_kubernetes_pod_label_app_kubernetes_io_component]
  targetLabel: charon_component
- action: replace
  sourceLabels: [__meta_kubernetes_pod_name]
  targetLabel: pod
{{- end }}

{{/*
CURVE (docs/security.md): certificates come from Secrets the user creates (the chart makes no
keys) and are mounted under /etc/charon/curve; the role's CHARON_SECURITY__* settings point at
them. Roles: router (own certificate, allowed workers and clients), worker (own certificate, the
router's public one), client (the gateway's upstream and the helm test pod: the router's public
certificate, and the client certificate when one is given).
*/}}
{{- define "charon.curve.dir" -}}/etc/charon/curve{{- end }}

{{/* Usage: include "charon.curve.env" (dict "ctx" $ "role" "router" "env" $defaults): adds to $defaults. */}}
{{- define "charon.curve.env" -}}
{{- $c := .ctx.Values.security.curve }}
{{- $dir := include "charon.curve.dir" . }}
{{- if $c.enabled }}
{{- if eq .role "router" }}
{{- $_ := set .env "CHARON_SECURITY__CURVE_SECRET_KEY" (printf "%s/own/router.key_secret" $dir) }}
{{- $_ := set .env "CHARON_SECURITY__CURVE_WORKERS" (printf "%s/workers" $dir) }}
{{- if $c.clients.secretName }}
{{- $_ := set .env "CHARON_SECURITY__CURVE_CLIENTS" (printf "%s/clients" $dir) }}
{{- end }}
{{- else }}
{{- $_ := set .env "CHARON_SECURITY__CURVE_SERVER_KEY" (printf "%s/server/router.key" $dir) }}
{{- $own := ternary $c.worker.secretName $c.client.secretName (eq .role "worker") }}
{{- if $own }}
{{- $_ := set .env "CHARON_SECURITY__CURVE_SECRET_KEY" (printf "%s/own/%s.key_secret" $dir .role) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Usage: include "charon.curve.mounts" (dict "ctx" $ "role" "worker") */}}
{{- define "charon.curve.mounts" -}}
{{- $c := .ctx.Values.security.curve }}
{{- $dir := include "charon.curve.dir" . }}
{{- if $c.enabled }}
{{- $own := ternary $c.router.secretName (ternary $c.worker.secretName $c.client.secretName (eq .role "worker")) (eq .role "router") }}
{{- if $own }}
- name: curve-own
  mountPath: {{ $dir }}/own
  readOnly: true
{{- end }}
{{- if eq .role "router" }}
- name: curve-workers
  mountPath: {{ $dir }}/workers
  readOnly: true
{{- if $c.clients.secretName }}
- name: curve-clients
  mountPath: {{ $dir }}/clients
  readOnly: true
{{- end }}
{{- else }}
- name: curve-server
  mountPath: {{ $dir }}/server
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{/* Usage: include "charon.curve.volumes" (dict "ctx" $ "role" "worker") */}}
{{- define "charon.curve.volumes" -}}
{{- $c := .ctx.Values.security.curve }}
{{- if $c.enabled }}
{{- $own := ternary $c.router.secretName (ternary $c.worker.secretName $c.client.secretName (eq .role "worker")) (eq .role "router") }}
{{- if $own }}
- name: curve-own
  secret:
    secretName: {{ $own }}
    defaultMode: 0440
    items:
      - key: {{ .role }}.key_secret
        path: {{ .role }}.key_secret
{{- end }}
{{- if eq .role "router" }}
- name: curve-workers
  secret:
    secretName: {{ $c.workers.secretName }}
    defaultMode: 0444
{{- if $c.clients.secretName }}
- name: curve-clients
  secret:
    secretName: {{ $c.clients.secretName }}
    defaultMode: 0444
{{- end }}
{{- else }}
{{- /* only the router's public certificate: its secret key never leaves the router pod */}}
- name: curve-server
  secret:
    secretName: {{ $c.router.secretName }}
    defaultMode: 0444
    items:
      - key: router.key
        path: router.key
{{- end }}
{{- end }}
{{- end }}

{{- define "charon.curve.validate" -}}
{{- $c := .Values.security.curve }}
{{- if $c.enabled }}
{{- range $key, $why := dict "router" "the router's certificate (keys router.key, router.key_secret)" "workers" "the allowed workers' public certificates (*.key): with CURVE on, an unlisted worker never registers" "worker" "the workers' own certificate (key worker.key_secret)" }}
{{- if not (get (get $c $key) "secretName") }}
{{- fail (printf "security.curve.%s.secretName is needed with security.curve.enabled: the Secret holding %s (see docs/security.md; the chart makes no keys)" $key $why) }}
{{- end }}
{{- end }}
{{- if and $c.clients.secretName (not $c.client.secretName) (or $.Values.gateway.enabled $.Values.tests.enabled) }}
{{- fail "security.curve.client.secretName is needed with security.curve.clients.secretName: the certificate (key client.key_secret) of the in-cluster clients the chart runs (gateway, helm test); list its client.key in the clients Secret" }}
{{- end }}
{{- end }}
{{- end }}
