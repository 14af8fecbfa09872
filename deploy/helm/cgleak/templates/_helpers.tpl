{{/*
The chart's name, or nameOverride (63 characters at most: a label value's limit).
*/}}
{{- define "cgleak.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of every object: fullnameOverride, else the release's name when it contains the
chart's name (`helm install cgleak ...` gives `cgleak`), else <release>-<name>.
*/}}
{{- define "cgleak.fullname" -}}
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

{{/*
helm.sh/chart: <chart>-<version>.
*/}}
{{- define "cgleak.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
What selects the agent's pods (the DaemonSet, the Service, the NetworkPolicy): never changes
between upgrades.
*/}}
{{- define "cgleak.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cgleak.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The labels of every object.
*/}}
{{- define "cgleak.labels" -}}
helm.sh/chart: {{ include "cgleak.chart" . }}
{{ include "cgleak.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cgleak
{{- end }}
