{{/* Names and labels, as `helm create` lays them out. */}}
{{- define "falco-nats-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "falco-nats-gateway.fullname" -}}
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

{{- define "falco-nats-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "falco-nats-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "falco-nats-gateway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "falco-nats-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end }}

{{- define "falco-nats-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "falco-nats-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "falco-nats-gateway.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The port of a HOST:PORT setting, given as (list "<key>" <value> "<example>"). */}}
{{- define "falco-nats-gateway.listenPort" -}}
{{- $key := index . 0 }}
{{- $listen := toString (index . 1) }}
{{- $port := regexFind "[0-9]+$" $listen }}
{{- if or (not $port) (not (contains ":" $listen)) }}
{{- fail (printf "config.%s: %q is not HOST:PORT (for example %s)" $key $listen (index . 2)) }}
{{- end }}
{{- if or (lt (int $port) 1) (gt (int $port) 65535) }}
{{- fail (printf "config.%s: %q: the port must be 1 to 65535, a container port" $key $listen) }}
{{- end }}
{{- int $port }}
{{- end }}

{{/* The port of config.listen: the container port, probes and Service target follow it. */}}
{{- define "falco-nats-gateway.httpPort" -}}
{{- $listen := required "config.listen is required (HOST:PORT)" .Values.config.listen }}
{{- include "falco-nats-gateway.listenPort" (list "listen" $listen "0.0.0.0:2801") }}
{{- end }}

{{/* The port of config.health_listen (plain HTTP, health and metrics only); empty when off. */}}
{{- define "falco-nats-gateway.healthPort" -}}
{{- with .Values.config.health_listen }}
{{- include "falco-nats-gateway.listenPort" (list "health_listen" . "0.0.0.0:2802") }}
{{- end }}
{{- end }}

{{/* HTTPS once the gateway has a server certificate. */}}
{{- define "falco-nats-gateway.httpScheme" -}}
{{- if or (hasKey .Values.secretFiles "tls_cert") .Values.config.tls_cert }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/* Client certificates required on the HTTP port (Falco's http_output mtls). */}}
{{- define "falco-nats-gateway.clientCerts" -}}
{{- if or (hasKey .Values.secretFiles "tls_client_ca") .Values.config.tls_client_ca }}true{{ end }}
{{- end }}

{{/*
Where the kubelet and Prometheus ask: the health port over plain HTTP when config.health_listen
is set (they cannot present a client certificate, nor need the alert port's TLS), otherwise the
HTTP port with its scheme. Returns a dict: name, port, scheme.
*/}}
{{- define "falco-nats-gateway.probeTarget" -}}
{{- with include "falco-nats-gateway.healthPort" . }}
{{- dict "name" "health" "port" (int .) "scheme" "HTTP" | toJson }}
{{- else }}
{{- dict "name" "http" "port" (include "falco-nats-gateway.httpPort" . | int) "scheme" (include "falco-nats-gateway.httpScheme" .) | toJson }}
{{- end }}
{{- end }}

{{/* Falco's gRPC unix socket path, when the pod reads it (DaemonSet mode); else empty. */}}
{{- define "falco-nats-gateway.falcoSocket" -}}
{{- if and (eq .Values.mode "daemonset") .Values.daemonset.falcoGrpcSocket (not .Values.config.falco_grpc) }}
{{- $socket := .Values.daemonset.falcoGrpcSocket }}
{{- if not (hasPrefix "unix:///" $socket) }}
{{- fail (printf "daemonset.falcoGrpcSocket: %q must be unix:///<absolute path>" $socket) }}
{{- end }}
{{- trimPrefix "unix://" $socket }}
{{- end }}
{{- end }}

{{- define "falco-nats-gateway.socketAsRoot" -}}
{{- if and (include "falco-nats-gateway.falcoSocket" .) .Values.daemonset.socketAccessAsRoot }}true{{ end }}
{{- end }}

{{/*
One config value as the gateway reads it from the environment. Helm hands every YAML number to
templates as a float64, which prints 134217728 as 1.34217728e+08: whole numbers are written as
integers. Lists become comma-separated, and custom_fields' map becomes key:value,key:value.
*/}}
{{- define "falco-nats-gateway.envValue" -}}
{{- $key := index . 0 }}
{{- $value := index . 1 }}
{{- if kindIs "slice" $value }}
{{- join "," $value }}
{{- else if and (kindIs "map" $value) (eq $key "custom_fields") }}
{{- $pairs := list }}
{{- range $name, $field := $value }}
{{- $pairs = append $pairs (printf "%s:%v" $name $field) }}
{{- end }}
{{- join "," $pairs }}
{{- else if kindIs "map" $value }}
{{- fail (printf "config.%s: expected a value or a list, got a map" $key) }}
{{- else if and (kindIs "float64" $value) (eq $value (float64 (int64 $value))) }}
{{- int64 $value }}
{{- else }}
{{- $value }}
{{- end }}
{{- end }}

{{/* Settings keys become variable names, so they must be what the gateway calls a key. */}}
{{- define "falco-nats-gateway.checkKey" -}}
{{- $where := index . 0 }}
{{- $key := index . 1 }}
{{- if not (regexMatch "^[a-z][a-z0-9_]*$" $key) }}
{{- fail (printf "%s.%s: a setting is lower-case letters, digits and _ (it becomes GATEWAY_%s)" $where $key (upper $key)) }}
{{- end }}
{{- end }}

{{/*
Every GATEWAY_* variable: config values, then secretEnv, then secretFiles, then what the chart
sets itself (falco_grpc in DaemonSet mode). A setting given in two places is refused rather than
leaving Kubernetes to pick one.
*/}}
{{- define "falco-nats-gateway.env" -}}
{{- $seen := dict }}
{{- range $key, $value := .Values.config }}
{{- include "falco-nats-gateway.checkKey" (list "config" $key) }}
{{- if not (or (kindIs "invalid" $value) (and (kindIs "string" $value) (eq $value ""))) }}
{{- $_ := set $seen $key "config" }}
- name: {{ printf "GATEWAY_%s" (upper $key) }}
  value: {{ include "falco-nats-gateway.envValue" (list $key $value) | quote }}
{{- end }}
{{- end }}
{{- range $key, $ref := .Values.secretEnv }}
{{- include "falco-nats-gateway.checkKey" (list "secretEnv" $key) }}
{{- if hasKey $seen $key }}
{{- fail (printf "secretEnv.%s: also set in %s; give each setting once" $key (get $seen $key)) }}
{{- end }}
{{- $_ := set $seen $key "secretEnv" }}
- name: {{ printf "GATEWAY_%s" (upper $key) }}
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "secretEnv.%s.name: the Secret's name is required" $key) $ref.name | quote }}
      key: {{ required (printf "secretEnv.%s.key: the key in the Secret is required" $key) $ref.key | quote }}
      {{- if $ref.optional }}
      optional: true
      {{- end }}
{{- end }}
{{- range $key, $ref := .Values.secretFiles }}
{{- include "falco-nats-gateway.checkKey" (list "secretFiles" $key) }}
{{- if hasKey $seen $key }}
{{- fail (printf "secretFiles.%s: also set in %s; give each setting once" $key (get $seen $key)) }}
{{- end }}
{{- $_ := set $seen $key "secretFiles" }}
- name: {{ printf "GATEWAY_%s" (upper $key) }}
  value: {{ printf "%s/%s" (include "falco-nats-gateway.secretsDir" $) $key | quote }}
{{- end }}
{{- with include "falco-nats-gateway.falcoSocket" . }}
- name: GATEWAY_FALCO_GRPC
  value: {{ printf "unix://%s" . | quote }}
{{- end }}
{{- end }}

{{- define "falco-nats-gateway.secretsDir" -}}
/etc/falco-nats-gateway/secrets
{{- end }}

{{/* The spool folder on the node, one per release. */}}
{{- define "falco-nats-gateway.spoolHostPath" -}}
{{- printf "%s/%s/%s" (trimSuffix "/" .Values.spool.hostPath) .Release.Namespace (include "falco-nats-gateway.fullname" .) }}
{{- end }}

{{- define "falco-nats-gateway.spoolClaimName" -}}
{{- default (printf "%s-spool" (include "falco-nats-gateway.fullname" .)) .Values.spool.pvc.existingClaim }}
{{- end }}

{{- define "falco-nats-gateway.usesPvc" -}}
{{- if and .Values.config.spool_dir (eq .Values.mode "deployment") (eq .Values.spool.volume "pvc") }}true{{ end }}
{{- end }}

{{/* Combinations the chart refuses, each with what to do instead. */}}
{{- define "falco-nats-gateway.validate" -}}
{{- if not (has .Values.mode (list "daemonset" "deployment")) }}
{{- fail (printf "mode: %q is not daemonset (Falco 0.43 and older, gRPC and HTTP) or deployment (Falco 0.44+, HTTP only)" (toString .Values.mode)) }}
{{- end }}
{{- $grpc := toString (default "" .Values.config.falco_grpc) }}
{{- if and (eq .Values.mode "deployment") (hasPrefix "unix://" $grpc) }}
{{- fail "config.falco_grpc: a Deployment has no Falco socket to read; use mode: daemonset for Falco's gRPC unix socket, or HTTP only" }}
{{- end }}
{{- if and (eq .Values.mode "daemonset") (hasPrefix "unix://" $grpc) }}
{{- fail "config.falco_grpc: set Falco's unix socket as daemonset.falcoGrpcSocket, which also mounts its folder from the host" }}
{{- end }}
{{- with .Values.config.spool_dir }}
{{- if not (hasPrefix "/" (toString .)) }}
{{- fail (printf "config.spool_dir: %q must be an absolute path" (toString .)) }}
{{- end }}
{{- end }}
{{- if not (has .Values.spool.volume (list "emptyDir" "pvc")) }}
{{- fail (printf "spool.volume: %q is not emptyDir or pvc" (toString .Values.spool.volume)) }}
{{- end }}
{{- if and (include "falco-nats-gateway.usesPvc" .) (gt (int .Values.deployment.replicas) 1) }}
{{- fail "spool.volume: pvc holds one gateway's spool; with deployment.replicas above 1 use emptyDir, or one release per replica" }}
{{- end }}
{{- /* The gateway's default applies when config.shutdown_timeout is unset. */}}
{{- $shutdown := 10.0 }}
{{- $configured := .Values.config.shutdown_timeout }}
{{- if not (or (kindIs "invalid" $configured) (eq (toString $configured) "")) }}
{{- $shutdown = float64 $configured }}
{{- end }}
{{- $health := include "falco-nats-gateway.healthPort" . }}
{{- if and (include "falco-nats-gateway.clientCerts" .) (not $health) }}
{{- fail "tls_client_ca: client certificates on the HTTP port would fail every probe (the kubelet, like Prometheus, presents none); set config.health_listen (for example 0.0.0.0:2802), a plain-HTTP port for the probes and /metrics" }}
{{- end }}
{{- if and $health (eq $health (include "falco-nats-gateway.httpPort" .)) }}
{{- fail (printf "config.health_listen: port %s is already the port of config.listen; give it its own port" $health) }}
{{- end }}
{{- $needed := addf $shutdown (float64 .Values.preStopSleepSeconds) }}
{{- if le (float64 .Values.terminationGracePeriodSeconds) $needed }}
{{- fail (printf "terminationGracePeriodSeconds: %v leaves no time to drain; it must exceed preStopSleepSeconds + config.shutdown_timeout (%v)" .Values.terminationGracePeriodSeconds $needed) }}
{{- end }}
{{- end }}
