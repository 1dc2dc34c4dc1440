{{/* The MallStack's name. */}}
{{- define "mall.stackName" -}}
{{- default .Release.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "mall.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: mall
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* replicas, resources and autoscaling of one component (a dict of values). */}}
{{- define "mall.scaling" -}}
replicas: {{ .replicas }}
{{- with .resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if and .autoscaling .autoscaling.enabled }}
autoscaling:
  minReplicas: {{ .autoscaling.minReplicas }}
  maxReplicas: {{ .autoscaling.maxReplicas }}
  targetCPUUtilizationPercentage: {{ .autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- end }}

{{/* A {secretRef: {name, key}} from {secretName, secretKey}; fails when the name is missing. */}}
{{- define "mall.external" -}}
{{- $ext := index . 0 }}
{{- $what := index . 1 }}
{{- if not $ext.secretName }}
{{- fail (printf "%s.mode is external: set %s.external.secretName (and secretKey)" $what $what) }}
{{- end -}}
external:
  secretRef:
    name: {{ $ext.secretName | quote }}
    key: {{ $ext.secretKey | quote }}
{{- end }}
