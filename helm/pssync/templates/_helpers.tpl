{{/*
The chart name, or nameOverride.
*/}}
{{- define "pssync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full resource name: fullnameOverride, or release-chart (just the release name when
it already contains the chart name). Kept to 52 characters: a StatefulSet pod adds
"-<ordinal>" and its controller-revision-hash label adds 11 more.
*/}}
{{- define "pssync.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "pssync.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every resource.
*/}}
{{- define "pssync.labels" -}}
helm.sh/chart: {{ include "pssync.chart" . }}
{{ include "pssync.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pssync
{{- end }}

{{/*
Labels that select the worker pods (immutable on a StatefulSet: never add to them).
*/}}
{{- define "pssync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pssync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount's name.
*/}}
{{- define "pssync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pssync.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference.
*/}}
{{- define "pssync.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
A map of settings (camelCase keys, as under .Values.config) rendered as
PSSYNC_SNAKE_CASE: "value" lines. Helm reads every number in values.yaml as a float:
whole numbers are printed as integers (86400, not 86400 or 8.64e+04).
*/}}
{{- define "pssync.settingsEnv" -}}
{{- range $key, $value := . }}
{{- $text := toString $value }}
{{- if and (kindIs "float64" $value) (eq (floor $value) $value) }}
{{- $text = toString (int64 $value) }}
{{- end }}
{{ printf "PSSYNC_%s" ($key | snakecase | upper) }}: {{ $text | quote }}
{{- end }}
{{- end }}
