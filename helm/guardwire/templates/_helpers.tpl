{{/*
Helpers of the Guardwire chart.

The helpers that end up in a pod (guardwire.config*, guardwire.sidecar, guardwire.initContainers,
guardwire.volumes, guardwire.app*, see _sidecar.tpl) read only `.Values` and `.Release`, so that a
parent chart that has guardwire as a dependency can call them with

  {{- $gw := dict "Values" .Values.guardwire "Release" .Release }}
  {{- include "guardwire.initContainers" $gw | nindent 8 }}
*/}}

{{/* The server version the chart was written for: the default image tag. Kept equal to
Chart.yaml appVersion (a chart test checks it); a constant because `.Chart` is the parent's
chart when a parent includes the helpers. */}}
{{- define "guardwire.appVersion" -}}0.1.0{{- end -}}

{{- define "guardwire.name" -}}
{{- default "guardwire" .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "guardwire.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "guardwire.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "guardwire.configMapName" -}}
{{- printf "%s-config" (include "guardwire.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "guardwire.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "guardwire.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels (own resources only; they use .Chart). */}}
{{- define "guardwire.selectorLabels" -}}
app.kubernetes.io/name: {{ include "guardwire.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "guardwire.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "guardwire.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: guardwire
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Image reference of the guard container. */}}
{{- define "guardwire.image" -}}
{{- $img := .Values.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- $flavor := ternary "cuda" "cpu" (.Values.gpu.enabled | default false) -}}
{{- $tag := $img.tag | default (printf "%s-%s" (include "guardwire.appVersion" .) $flavor) -}}
{{- printf "%s:%s" $img.repository (toString $tag) -}}
{{- end -}}
{{- end -}}

{{/* Image of the model download init container (default: the guard image). */}}
{{- define "guardwire.downloadImage" -}}
{{- $d := .Values.model.download.image -}}
{{- if $d.repository -}}
{{- printf "%s:%s" $d.repository (toString ($d.tag | default "latest")) -}}
{{- else -}}
{{- include "guardwire.image" . -}}
{{- end -}}
{{- end -}}

{{- define "guardwire.socketPath" -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.uds.dir) .Values.uds.socketName -}}
{{- end -}}

{{/* Model directory the server loads (config `model`). */}}
{{- define "guardwire.modelPath" -}}
{{- $m := .Values.model -}}
{{- if $m.path -}}
{{- printf "%s/%s" (trimSuffix "/" $m.mountPath) (trimPrefix "/" $m.path) -}}
{{- else -}}
{{- $m.mountPath -}}
{{- end -}}
{{- end -}}

{{/* gRPC target for clients in the same pod. */}}
{{- define "guardwire.target" -}}
{{- if .Values.uds.enabled -}}
{{- printf "unix://%s" (include "guardwire.socketPath" .) -}}
{{- else -}}
{{- printf "127.0.0.1:%d" (int .Values.grpc.port) -}}
{{- end -}}
{{- end -}}

{{- define "guardwire.terminationGracePeriodSeconds" -}}
{{- $drain := float64 .Values.drainGraceSeconds -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add (ceil $drain | int) 10 -}}
{{- else -}}
{{- $t := int .Values.terminationGracePeriodSeconds -}}
{{- if le (float64 $t) $drain -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be larger than drainGraceSeconds (%v): the kubelet would kill the guard before it has drained" $t .Values.drainGraceSeconds) -}}
{{- end -}}
{{- $t -}}
{{- end -}}
{{- end -}}

{{/* Checks of combinations the schema cannot express. */}}
{{- define "guardwire.validate" -}}
{{- $v := .Values -}}
{{- if and (eq $v.model.source "pvc") (not $v.model.pvc.claimName) -}}
{{- fail "model.source=pvc needs model.pvc.claimName (an existing PersistentVolumeClaim holding the model), or choose model.source=download|demo|none" -}}
{{- end -}}
{{- if and (eq $v.model.source "download") (not $v.model.download.repo) -}}
{{- fail "model.source=download needs model.download.repo (a Hugging Face hub id such as meta-llama/Llama-Guard-3-1B)" -}}
{{- end -}}
{{- if and $v.uds.enabled (eq $v.mode "standalone") -}}
{{- fail "uds.enabled only makes sense in sidecar/library mode (the socket is shared inside one pod); standalone pods are reached over the Service" -}}
{{- end -}}
{{- if and $v.serviceMonitor.enabled (not $v.telemetry.enabled) -}}
{{- fail "serviceMonitor.enabled needs telemetry.enabled=true and telemetry.prometheusPort > 0 (the guard has no metrics endpoint otherwise)" -}}
{{- end -}}
{{- if and $v.serviceMonitor.enabled (not (gt (int $v.telemetry.prometheusPort) 0)) -}}
{{- fail "serviceMonitor.enabled needs telemetry.prometheusPort > 0" -}}
{{- end -}}
{{- if and $v.pdb.enabled (not (kindIs "invalid" $v.pdb.minAvailable)) (not (kindIs "invalid" $v.pdb.maxUnavailable)) -}}
{{- fail "pdb: set either minAvailable or maxUnavailable, not both (set the other to null)" -}}
{{- end -}}
{{- $_ := include "guardwire.terminationGracePeriodSeconds" . -}}
{{- end -}}

{{/* The server settings as a dict: values.config + the keys the chart owns. */}}
{{- define "guardwire.configDict" -}}
{{- $v := .Values -}}
{{- $cfg := dict -}}
{{- range $k, $val := ($v.config | default dict) -}}
{{- $_ := set $cfg $k $val -}}
{{- end -}}
{{- $listen := list (printf "%s:%d" $v.grpc.bindAddress (int $v.grpc.port)) -}}
{{- if $v.uds.enabled -}}
{{- $listen = append $listen (printf "unix:%s" (include "guardwire.socketPath" .)) -}}
{{- $_ := set $cfg "unix_socket_mode" $v.uds.mode -}}
{{- end -}}
{{- $_ := set $cfg "listen" $listen -}}
{{- if ne $v.model.source "demo" -}}
{{- $_ := set $cfg "model" (include "guardwire.modelPath" .) -}}
{{- end -}}
{{- $_ := set $cfg "drain_grace_s" $v.drainGraceSeconds -}}
{{- /* telemetry.* -> the server's otel_* / prometheus_port / trace_conversations options */ -}}
{{- $t := $v.telemetry -}}
{{- /* rendered only when on, so a default config also suits a server without these options */ -}}
{{- if $t.enabled -}}
{{- $_ := set $cfg "otel_enabled" true -}}
{{- $_ := set $cfg "otel_endpoint" ($t.otlpEndpoint | default "") -}}
{{- $_ := set $cfg "otel_service_name" ($t.serviceName | default "guardwire") -}}
{{- $_ := set $cfg "prometheus_port" (int ($t.prometheusPort | default 0)) -}}
{{- $_ := set $cfg "trace_conversations" ($t.traceConversations | default false) -}}
{{- end -}}
{{- toJson $cfg -}}
{{- end -}}

{{/* config.yaml of the ConfigMap. One `key: <json>` line per key: JSON scalars are valid YAML
and, unlike toYaml, never print large numbers as 1e+06 (which YAML reads as a string). */}}
{{- define "guardwire.configData" -}}
{{- $cfg := include "guardwire.configDict" . | fromJson -}}
# Guardwire server config, rendered by the Helm chart from values.yaml.
# Keys: the server options (guardwire serve --help). Flags and GUARDWIRE_* env override them.
{{- range $k := keys $cfg | sortAlpha }}
{{ $k }}: {{ get $cfg $k | toJson }}
{{- end }}
{{- end -}}

{{/* Pod annotations that roll the pods when the config changes. */}}
{{- define "guardwire.podAnnotations" -}}
checksum/guardwire-config: {{ include "guardwire.configData" . | sha256sum }}
{{- end -}}
