{{/* The pod, shared by the DaemonSet and the Deployment. */}}
{{- define "falco-nats-gateway.podTemplate" -}}
{{- $socket := include "falco-nats-gateway.falcoSocket" . }}
{{- $port := include "falco-nats-gateway.httpPort" . | int }}
{{- $health := include "falco-nats-gateway.healthPort" . }}
{{- $probe := include "falco-nats-gateway.probeTarget" . | fromJson }}
metadata:
  labels:
    {{- include "falco-nats-gateway.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if or .Values.metrics.podAnnotations .Values.podAnnotations }}
  annotations:
    {{- if .Values.metrics.podAnnotations }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ $probe.port | int | quote }}
    prometheus.io/path: {{ .Values.metrics.path | quote }}
    prometheus.io/scheme: {{ lower $probe.scheme | quote }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
spec:
  serviceAccountName: {{ include "falco-nats-gateway.serviceAccountName" . }}
  # The gateway never calls the Kubernetes API.
  automountServiceAccountToken: false
  # Service links would put <SERVICE>_PORT variables next to the GATEWAY_* settings.
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- $podSecurity := deepCopy .Values.podSecurityContext }}
    {{- if include "falco-nats-gateway.socketAsRoot" . }}
    {{- /* See daemonset.socketAccessAsRoot: Falco's socket admits root only. */}}
    {{- $_ := set $podSecurity "runAsUser" 0 }}
    {{- $_ := set $podSecurity "runAsGroup" 0 }}
    {{- $_ := set $podSecurity "runAsNonRoot" false }}
    {{- end }}
    {{- toYaml $podSecurity | nindent 4 }}
  {{- if and .Values.config.spool_dir (eq .Values.mode "daemonset") .Values.spool.chownHostPath (not (include "falco-nats-gateway.socketAsRoot" .)) }}
  initContainers:
    # The kubelet creates the spool's host folder owned by root; the gateway runs as
    # podSecurityContext's user. Root here, with no capability but CHOWN, gives it the folder.
    - name: spool-owner
      image: {{ include "falco-nats-gateway.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command:
        - chown
        - -R
        - {{ printf "%v:%v" (.Values.podSecurityContext.runAsUser | default 10001 | int) (.Values.podSecurityContext.runAsGroup | default 10001 | int) | quote }}
        - /spool
      securityContext:
        runAsUser: 0
        runAsGroup: 0
        runAsNonRoot: false
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        privileged: false
        capabilities:
          drop:
            - ALL
          add:
            - CHOWN
      resources:
        requests:
          cpu: 10m
          memory: 16Mi
        limits:
          memory: 64Mi
      volumeMounts:
        - name: spool
          mountPath: /spool
  {{- end }}
  containers:
    - name: gateway
      image: {{ include "falco-nats-gateway.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      ports:
        - name: http
          containerPort: {{ $port }}
          protocol: TCP
        {{- with $health }}
        # config.health_listen: /ping, /healthz, /readyz and /metrics only, plain HTTP.
        - name: health
          containerPort: {{ . }}
          protocol: TCP
        {{- end }}
      env:
        {{- include "falco-nats-gateway.env" . | trim | nindent 8 }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- range $name := list "startup" "liveness" "readiness" }}
      {{- with index $.Values.probes $name }}
      {{ $name }}Probe:
        httpGet:
          path: {{ .path }}
          port: {{ $probe.name }}
          scheme: {{ $probe.scheme }}
        periodSeconds: {{ .periodSeconds }}
        timeoutSeconds: {{ .timeoutSeconds }}
        failureThreshold: {{ .failureThreshold }}
      {{- end }}
      {{- end }}
      {{- if gt (int .Values.preStopSleepSeconds) 0 }}
      lifecycle:
        preStop:
          exec:
            command: ["sleep", {{ .Values.preStopSleepSeconds | int | toString | quote }}]
      {{- end }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        # A read-only root filesystem still needs somewhere for temporary files (SQLite's).
        - name: tmp
          mountPath: /tmp
        {{- if $socket }}
        - name: falco-socket
          mountPath: {{ dir $socket }}
          readOnly: true
        {{- end }}
        {{- with .Values.config.spool_dir }}
        - name: spool
          mountPath: {{ . }}
        {{- end }}
        {{- if .Values.secretFiles }}
        - name: secret-files
          mountPath: {{ include "falco-nats-gateway.secretsDir" . }}
          readOnly: true
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- if $socket }}
    # The folder, not the socket file: Falco re-creates the socket when it restarts.
    - name: falco-socket
      hostPath:
        path: {{ dir $socket }}
        # The gateway may start before Falco has created the folder.
        type: DirectoryOrCreate
    {{- end }}
    {{- if .Values.config.spool_dir }}
    - name: spool
      {{- if eq .Values.mode "daemonset" }}
      hostPath:
        path: {{ include "falco-nats-gateway.spoolHostPath" . }}
        type: DirectoryOrCreate
      {{- else if include "falco-nats-gateway.usesPvc" . }}
      persistentVolumeClaim:
        claimName: {{ include "falco-nats-gateway.spoolClaimName" . }}
      {{- else }}
      emptyDir:
        {{- with .Values.spool.emptyDir.sizeLimit }}
        sizeLimit: {{ . }}
        {{- end }}
      {{- end }}
    {{- end }}
    {{- if .Values.secretFiles }}
    - name: secret-files
      projected:
        # 0440: readable by the gateway's group (fsGroup) only.
        defaultMode: 288
        sources:
          {{- range $key, $ref := .Values.secretFiles }}
          - secret:
              name: {{ required (printf "secretFiles.%s.name: the Secret's name is required" $key) $ref.name | quote }}
              items:
                - key: {{ required (printf "secretFiles.%s.key: the key in the Secret is required" $key) $ref.key | quote }}
                  path: {{ $key }}
          {{- end }}
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- $tolerations := .Values.tolerations }}
  {{- if eq .Values.mode "daemonset" }}
  {{- $tolerations = concat .Values.daemonset.tolerations .Values.tolerations }}
  {{- end }}
  {{- with $tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if and (eq .Values.mode "deployment") .Values.deployment.spreadAcrossNodes }}
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: kubernetes.io/hostname
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- include "falco-nats-gateway.selectorLabels" . | nindent 10 }}
  {{- end }}
{{- end }}
