{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "hadis-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release name already contains the chart name. */}}
{{- define "hadis-operator.fullname" -}}
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

{{- define "hadis-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hadis-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hadis-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "hadis-operator.labels" -}}
helm.sh/chart: {{ include "hadis-operator.chart" . }}
{{ include "hadis-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: hadis
{{- end }}

{{- define "hadis-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hadis-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Refuse value combinations that the schema cannot express. */}}
{{- define "hadis-operator.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true: without a Lease every replica would act on every cascade" }}
{{- end }}
{{- $le := .Values.leaderElection }}
{{- if not (and (lt (int $le.retryPeriodSeconds) (int $le.renewDeadlineSeconds)) (lt (int $le.renewDeadlineSeconds) (int $le.leaseDurationSeconds))) }}
{{- fail "leaderElection needs retryPeriodSeconds < renewDeadlineSeconds < leaseDurationSeconds" }}
{{- end }}
{{- if and .Values.metrics.podMonitor.enabled .Values.metrics.serviceMonitor.enabled }}
{{- fail "enable metrics.podMonitor or metrics.serviceMonitor, not both: every series would be scraped twice" }}
{{- end }}
{{- end }}

{{/* The router image the operator gives its cascades: routerImage, else the operator's own. */}}
{{- define "hadis-operator.routerImage" -}}
{{- $tag := .Values.routerImage.tag | default .Values.image.tag | default .Chart.AppVersion -}}
{{- printf "%s:%s" (.Values.routerImage.repository | default .Values.image.repository) $tag -}}
{{- end }}

{{/* The worker image the operator gives its cascades. */}}
{{- define "hadis-operator.workerImage" -}}
{{- printf "%s:%s" .Values.workerImage.repository (.Values.workerImage.tag | default .Chart.AppVersion) -}}
{{- end }}
