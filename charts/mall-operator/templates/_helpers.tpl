{{/* The chart's name, overridable. */}}
{{- define "mall-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: every object of the release is called this (or starts with it). */}}
{{- define "mall-operator.fullname" -}}
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

{{/* Cluster-scoped objects (ClusterRole, ClusterRoleBinding) carry the namespace too: two releases of the
same name in two namespaces must not share them. */}}
{{- define "mall-operator.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "mall-operator.fullname" .) }}
{{- end }}

{{- define "mall-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mall-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The `helm test` Pod: not the operator's selector labels, so the metrics Service never picks it; the
NetworkPolicy admits it by these. */}}
{{- define "mall-operator.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "mall-operator.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mall-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mall-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mall
{{- end }}

{{- define "mall-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mall-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mall-operator.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if eq $tag "latest" }}
{{- fail "image.tag: pin a version; \"latest\" is not allowed" }}
{{- end }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{- define "mall-operator.leaseName" -}}
{{- default (include "mall-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "mall-operator.metricsService" -}}
{{- printf "%s-metrics" (include "mall-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
