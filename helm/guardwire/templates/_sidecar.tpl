{{/*
Named templates that put the guard into a pod. Public (stable) ones:

  guardwire.initContainers   list items for `initContainers:`: the model download init container
                             (model.source=download) followed by the native sidecar. Use this one.
  guardwire.sidecar          list item: only the guard as a native sidecar (restartPolicy: Always).
  guardwire.container        list item: the guard as a regular container (standalone pools).
  guardwire.volumes          list items for `volumes:` (config, tmp, model, socket).
  guardwire.appEnv           list items for the app container's `env:` (GUARDWIRE_TARGET).
  guardwire.appVolumeMounts  list items for the app container's `volumeMounts:` (the socket dir).
  guardwire.podAnnotations   map entries (config checksum) for the pod template's annotations.

They need the ConfigMap rendered by this chart (any mode, `library` renders only it) and read
only .Values and .Release; see README.md "Adding the sidecar to your own workload".
*/}}

{{/* The container spec without `name:` (shared by the sidecar and the standalone container). */}}
{{- define "guardwire.containerBody" -}}
{{- $v := .Values -}}
image: {{ include "guardwire.image" . | quote }}
imagePullPolicy: {{ $v.image.pullPolicy }}
args:
  - --config
  - /etc/guardwire/config.yaml
  {{- if eq $v.model.source "demo" }}
  - --demo
  {{- end }}
env:
  - name: HF_HUB_OFFLINE
    value: "1"
  {{- with $v.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
ports:
  - name: grpc
    containerPort: {{ $v.grpc.port }}
    protocol: TCP
  {{- if and $v.telemetry.enabled (gt (int $v.telemetry.prometheusPort) 0) }}
  - name: metrics
    containerPort: {{ $v.telemetry.prometheusPort }}
    protocol: TCP
  {{- end }}
{{- with $v.probes.startup }}
{{- if .enabled }}
startupProbe:
  grpc:
    port: {{ $v.grpc.port }}
    service: {{ .service | quote }}
  periodSeconds: {{ .periodSeconds }}
  timeoutSeconds: {{ .timeoutSeconds }}
  failureThreshold: {{ .failureThreshold }}
{{- end }}
{{- end }}
{{- with $v.probes.liveness }}
{{- if .enabled }}
livenessProbe:
  grpc:
    port: {{ $v.grpc.port }}
    service: {{ .service | quote }}
  periodSeconds: {{ .periodSeconds }}
  timeoutSeconds: {{ .timeoutSeconds }}
  failureThreshold: {{ .failureThreshold }}
{{- end }}
{{- end }}
{{- with $v.probes.readiness }}
{{- if .enabled }}
readinessProbe:
  grpc:
    port: {{ $v.grpc.port }}
    service: {{ .service | quote }}
  periodSeconds: {{ .periodSeconds }}
  timeoutSeconds: {{ .timeoutSeconds }}
  failureThreshold: {{ .failureThreshold }}
{{- end }}
{{- end }}
{{- $res := deepCopy ($v.resources | default dict) }}
{{- if $v.gpu.enabled }}
{{- $limits := $res.limits | default dict }}
{{- $_ := set $limits $v.gpu.resourceName (int $v.gpu.count) }}
{{- $_ := set $res "limits" $limits }}
{{- end }}
{{- with $res }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $v.securityContext | nindent 2 }}
volumeMounts:
  - name: guardwire-config
    mountPath: /etc/guardwire
    readOnly: true
  - name: guardwire-tmp
    mountPath: /tmp
  {{- if has $v.model.source (list "pvc" "download") }}
  - name: guardwire-model
    mountPath: {{ $v.model.mountPath }}
    readOnly: true
  {{- end }}
  {{- if $v.uds.enabled }}
  - name: guardwire-socket
    mountPath: {{ $v.uds.dir }}
  {{- end }}
  {{- with $v.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{- define "guardwire.container" -}}
- name: guardwire
  {{- include "guardwire.containerBody" . | nindent 2 }}
{{- end -}}

{{- define "guardwire.sidecar" -}}
- name: guardwire
  # Kubernetes native sidecar: starts before the app containers, runs as long as they do,
  # and is stopped after them.
  restartPolicy: Always
  {{- include "guardwire.containerBody" . | nindent 2 }}
{{- end -}}

{{/* Model download init container (list item); empty unless model.source=download. */}}
{{- define "guardwire.downloadInitContainer" -}}
{{- $v := .Values -}}
{{- $d := $v.model.download -}}
{{- if eq $v.model.source "download" -}}
- name: guardwire-model-download
  image: {{ include "guardwire.downloadImage" . | quote }}
  imagePullPolicy: {{ $d.image.pullPolicy }}
  command: ["/bin/sh", "-c"]
  args:
    - |
      set -euf
      marker="$GW_DIR/.guardwire-download"
      want="$GW_REPO@$GW_REVISION"
      if [ "$GW_SKIP_IF_PRESENT" = true ] && [ -f "$GW_DIR/config.json" ] \
         && [ "$(cat "$marker" 2>/dev/null)" = "$want" ]; then
        echo "model $want already in $GW_DIR, skipping the download"; exit 0
      fi
      mkdir -p "$GW_DIR"
      if command -v hf >/dev/null 2>&1; then
        set -- download "$GW_REPO" --local-dir "$GW_DIR"
        [ -n "$GW_REVISION" ] && set -- "$@" --revision "$GW_REVISION"
        for p in $GW_INCLUDE; do set -- "$@" --include "$p"; done
        hf "$@"
      else
        set -- download "$GW_REPO" --local-dir "$GW_DIR"
        [ -n "$GW_REVISION" ] && set -- "$@" --revision "$GW_REVISION"
        [ -n "$GW_INCLUDE" ] && set -- "$@" --include $GW_INCLUDE
        huggingface-cli "$@"
      fi
      printf '%s' "$want" > "$marker"
      echo "downloaded $want to $GW_DIR"
  env:
    - name: GW_REPO
      value: {{ $d.repo | quote }}
    - name: GW_REVISION
      value: {{ $d.revision | quote }}
    - name: GW_DIR
      value: {{ include "guardwire.modelPath" . | quote }}
    - name: GW_INCLUDE
      value: {{ join " " ($d.include | default list) | quote }}
    - name: GW_SKIP_IF_PRESENT
      value: {{ $d.skipIfPresent | toString | quote }}
    - name: HF_HOME
      value: /tmp/hf
    - name: HF_HUB_DISABLE_TELEMETRY
      value: "1"
    {{- if $d.tokenSecret.name }}
    - name: HF_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ $d.tokenSecret.name }}
          key: {{ $d.tokenSecret.key }}
          optional: {{ $d.tokenSecret.optional }}
    {{- end }}
    {{- with $d.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $d.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  volumeMounts:
    - name: guardwire-model
      mountPath: {{ $v.model.mountPath }}
    - name: guardwire-tmp
      mountPath: /tmp
{{- end -}}
{{- end -}}

{{- define "guardwire.initContainers" -}}
{{- $download := include "guardwire.downloadInitContainer" . -}}
{{- if $download -}}
{{- $download }}
{{ end -}}
{{- include "guardwire.sidecar" . -}}
{{- end -}}

{{- define "guardwire.volumes" -}}
{{- $v := .Values -}}
- name: guardwire-config
  configMap:
    name: {{ include "guardwire.configMapName" . }}
- name: guardwire-tmp
  emptyDir:
    sizeLimit: {{ $v.tmpSizeLimit }}
{{- if eq $v.model.source "pvc" }}
- name: guardwire-model
  persistentVolumeClaim:
    claimName: {{ $v.model.pvc.claimName }}
    readOnly: true
{{- else if eq $v.model.source "download" }}
{{- $vol := $v.model.download.volume }}
- name: guardwire-model
  {{- if $vol.claimName }}
  persistentVolumeClaim:
    claimName: {{ $vol.claimName }}
  {{- else }}
  emptyDir:
    {{- with $vol.medium }}
    medium: {{ . }}
    {{- end }}
    sizeLimit: {{ $vol.sizeLimit }}
  {{- end }}
{{- end }}
{{- if $v.uds.enabled }}
- name: guardwire-socket
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- end }}
{{- with $v.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "guardwire.appEnv" -}}
- name: GUARDWIRE_TARGET
  value: {{ include "guardwire.target" . | quote }}
{{- end -}}

{{- define "guardwire.appVolumeMounts" -}}
{{- if .Values.uds.enabled -}}
- name: guardwire-socket
  mountPath: {{ .Values.uds.dir }}
{{- end -}}
{{- end -}}
