{{/* The release's base name: "lap" for a release named lap (or containing it), else "<release>-lap". */}}
{{- define "lap.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 54 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 54 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lap.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: web, worker or migrate. */}}
{{- define "lap.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lap.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lap.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "lap.secretName" -}}
{{- default (printf "%s-config" (include "lap.fullname" .)) .Values.existingSecret -}}
{{- end -}}

{{- define "lap.sandboxNamespace" -}}
{{- default .Release.Namespace .Values.sandbox.namespace -}}
{{- end -}}

{{- define "lap.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* What every LAP container is told besides the Secret: the backend, the sandboxes, the vault. */}}
{{- define "lap.env" -}}
- name: LAP_SANDBOX_BACKEND
  value: kubernetes
- name: LAP_K8S_NAMESPACE
  value: {{ include "lap.sandboxNamespace" . | quote }}
- name: LAP_K8S_IMAGE
  value: {{ .Values.sandbox.image | quote }}
- name: LAP_K8S_IMAGE_PULL_POLICY
  value: {{ .Values.sandbox.imagePullPolicy | quote }}
- name: LAP_K8S_CONNECT
  value: {{ .Values.sandbox.connect | quote }}
- name: LAP_K8S_VOLUME_SIZE
  value: {{ .Values.sandbox.volumeSize | quote }}
- name: LAP_K8S_MEMORY_MB
  value: {{ .Values.sandbox.memoryMB | quote }}
- name: LAP_K8S_WARM_POOL_SIZE
  value: {{ .Values.sandbox.warmPoolSize | quote }}
{{- with .Values.sandbox.storageClass }}
- name: LAP_K8S_STORAGE_CLASS
  value: {{ . | quote }}
{{- end }}
{{- with .Values.sandbox.cpu }}
- name: LAP_K8S_CPU
  value: {{ . | quote }}
{{- end }}
{{- with .Values.sandbox.runtimeClass }}
- name: LAP_K8S_RUNTIME_CLASS
  value: {{ . | quote }}
{{- end }}
{{- with .Values.sandbox.namespacePerTeam }}
{{- if not $.Values.rbac.clusterWide }}
{{- fail "sandbox.namespacePerTeam needs rbac.clusterWide=true (LAP creates and works in a namespace per team)" }}
{{- end }}
- name: LAP_K8S_NAMESPACE_PER_TEAM
  value: {{ . | quote }}
{{- end }}
- name: LAP_VAULT_LISTEN
  value: {{ printf "0.0.0.0:%v" .Values.worker.vaultPort | quote }}
- name: LAP_VAULT_URL
  value: {{ printf "http://%s-vault.%s.svc:%v" (include "lap.fullname" .) .Release.Namespace .Values.worker.vaultPort | quote }}
# The sandboxes of the turns a worker runs reach its own proxy first, not just any worker's through
# the Service: a worker that dies then cuts only its own turns' model streams.
- name: POD_IP
  valueFrom: {fieldRef: {fieldPath: status.podIP}}
- name: LAP_VAULT_ADVERTISE
  value: {{ printf "$(POD_IP):%v" .Values.worker.vaultPort | quote }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* The pod-level parts every LAP pod shares. */}}
{{- define "lap.podSpec" -}}
serviceAccountName: {{ include "lap.serviceAccountName" . }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
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
{{- end -}}

{{/* The container-level parts every LAP container shares: image, config, writable dirs. */}}
{{- define "lap.container" -}}
image: {{ include "lap.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
envFrom:
  - secretRef:
      name: {{ include "lap.secretName" . }}
env:
  {{- include "lap.env" . | nindent 2 }}
{{- end -}}

{{/* The NetworkPolicy peer of the workers, seen from the sandbox namespace. */}}
{{- define "lap.workerPeer" -}}
podSelector:
  matchLabels:
    {{- include "lap.selector" (dict "root" . "component" "worker") | nindent 4 }}
{{- if ne (include "lap.sandboxNamespace" .) .Release.Namespace }}
namespaceSelector:
  matchLabels:
    kubernetes.io/metadata.name: {{ .Release.Namespace }}
{{- end }}
{{- end -}}
