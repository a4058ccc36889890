{{/* The namespace vsop runs in: namespace.name, else the release namespace. */}}
{{- define "vsop.namespace" -}}
{{- .Values.namespace.name | default .Release.Namespace -}}
{{- end }}

{{/* Helm's labels, added to every object's own (the kustomize ones, which selectors use). */}}
{{- define "vsop.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* Labels of the operator pods; the Deployment, Services and NetworkPolicy select by them. */}}
{{- define "vsop.selectorLabels" -}}
app.kubernetes.io/name: vsop
app.kubernetes.io/component: manager
{{- end }}

{{- define "vsop.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end }}

{{- define "vsop.provisioningURL" -}}
{{- .Values.provisioning.url | default (printf "http://vsop-provisioning.%s.svc:%v" (include "vsop.namespace" .) .Values.provisioning.port) -}}
{{- end }}
