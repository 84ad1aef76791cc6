{{/* Name prefix of the namespaced and RBAC objects: nmisim for a release named nmisim. */}}
{{- define "nmisim.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains "nmisim" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-nmisim" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Helm's standard labels, on the metadata of every object (never on selectors or pod templates). */}}
{{- define "nmisim.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* The kustomize base's label, on every object and pod template. */}}
{{- define "nmisim.partOf" -}}
app.kubernetes.io/part-of: nmisim
{{- end -}}

{{/* Selector of the operator's pods (as in manifests/: never add a label here, selectors are immutable). */}}
{{- define "nmisim.operatorSelector" -}}
app.kubernetes.io/name: nmisim
app.kubernetes.io/component: operator
{{- end -}}

{{/* Metadata labels of the operator's objects. */}}
{{- define "nmisim.operatorLabels" -}}
{{ include "nmisim.operatorSelector" . }}
{{ include "nmisim.partOf" . }}
{{ include "nmisim.helmLabels" . }}
{{- end -}}

{{/* Metadata labels of the other objects (SimulationConfig, exceptions, peering). */}}
{{- define "nmisim.labels" -}}
{{ include "nmisim.partOf" . }}
{{ include "nmisim.helmLabels" . }}
{{- end -}}

{{/* kopf peering: on when more than one replica runs. */}}
{{- define "nmisim.peering" -}}
{{- if gt (int .Values.operator.replicas) 1 }}true{{ end -}}
{{- end -}}
