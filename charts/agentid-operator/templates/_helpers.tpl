{{/* Names, labels and the few derived values every template shares. */}}

{{- define "agentid.name" -}}
{{- default "agentid" .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "agentid.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains (include "agentid.name" .) .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "agentid.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "agentid.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "agentid.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: agentid
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "operator") */}}
{{- define "agentid.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agentid.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "agentid.componentLabels" -}}
{{ include "agentid.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "agentid.operator.fullname" -}}{{ include "agentid.fullname" . }}-operator{{- end -}}
{{- define "agentid.tokens.fullname" -}}{{ include "agentid.fullname" . }}-tokens{{- end -}}
{{- define "agentid.webhook.fullname" -}}{{ include "agentid.fullname" . }}-webhook{{- end -}}
{{- define "agentid.metrics.fullname" -}}{{ include "agentid.fullname" . }}-metrics{{- end -}}
{{- define "agentid.webhook.secret" -}}{{ include "agentid.fullname" . }}-webhook-tls{{- end -}}
{{- define "agentid.tokens.secret" -}}{{ include "agentid.fullname" . }}-tokens-tls{{- end -}}

{{- define "agentid.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The issuer URL of agent tokens: exactly what tokens, discovery and kube-apiserver will name. */}}
{{- define "agentid.tokens.issuer" -}}
{{- if .Values.tokenService.issuer -}}
{{- .Values.tokenService.issuer | trimSuffix "/" -}}
{{- else -}}
{{- printf "https://%s.%s.svc" (include "agentid.tokens.fullname" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* DNS names of a Service: (dict "name" "x" "namespace" "y") */}}
{{- define "agentid.serviceDnsNames" -}}
- {{ .name }}
- {{ .name }}.{{ .namespace }}
- {{ .name }}.{{ .namespace }}.svc
- {{ .name }}.{{ .namespace }}.svc.cluster.local
{{- end -}}

{{- define "agentid.tokens.dnsNames" -}}
{{ include "agentid.serviceDnsNames" (dict "name" (include "agentid.tokens.fullname" .) "namespace" .Release.Namespace) }}
{{- $host := regexReplaceAll ":[0-9]+$" (urlParse (include "agentid.tokens.issuer" .)).host "" }}
{{- if not (has $host (list (include "agentid.tokens.fullname" .) (printf "%s.%s.svc" (include "agentid.tokens.fullname" .) .Release.Namespace))) }}
- {{ $host }}
{{- end }}
{{- range .Values.tokenService.extraDnsNames }}
- {{ . }}
{{- end }}
{{- end -}}

{{/* True ("true") when watchNamespaces names exact namespaces: namespaced rights become Roles there. */}}
{{- define "agentid.namespacedRbac" -}}
{{- $exact := gt (len .Values.watchNamespaces) 0 -}}
{{- range .Values.watchNamespaces -}}
{{- if regexMatch "[*?\\[\\]!]" . -}}{{- $exact = false -}}{{- end -}}
{{- end -}}
{{- if $exact -}}true{{- end -}}
{{- end -}}

{{- define "agentid.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end -}}

{{- define "agentid.securityContext" -}}
{{ toYaml .Values.securityContext }}
{{- end -}}

{{/* Where agent Pods reach the token service (injected as AGENTID_TOKEN_URL's base). */}}
{{- define "agentid.podIdentity.tokenServiceUrl" -}}
{{- if .Values.podIdentity.tokenServiceUrl -}}
{{- .Values.podIdentity.tokenServiceUrl | trimSuffix "/" -}}
{{- else if eq (int .Values.tokenService.service.port) 443 -}}
{{- printf "https://%s.%s.svc" (include "agentid.tokens.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- printf "https://%s.%s.svc:%d" (include "agentid.tokens.fullname" .) .Release.Namespace (int .Values.tokenService.service.port) -}}
{{- end -}}
{{- end -}}

{{- define "agentid.podIdentity.enabled" -}}
{{- if and .Values.podIdentity.enabled .Values.tokenService.enabled }}true{{ end -}}
{{- end -}}

{{/* The ServiceAccount each component runs as: the chart's, or one you manage (serviceAccount.create=false). */}}
{{- define "agentid.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "agentid.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "agentid.tokens.serviceAccountName" -}}
{{- if .Values.tokenService.serviceAccount.create -}}
{{- default (include "agentid.tokens.fullname" .) .Values.tokenService.serviceAccount.name -}}
{{- else -}}
{{- required "tokenService.serviceAccount.name is required when tokenService.serviceAccount.create is false" .Values.tokenService.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Topology spread of a component's replicas: the user's list ([] for none), or by default over nodes, best effort
(ScheduleAnyway: a one-node cluster still schedules every replica). Args: dict root, component, value.
*/}}
{{- define "agentid.topologySpread" -}}
{{- if kindIs "invalid" .value }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "agentid.selectorLabels" (dict "root" .root "component" .component) | nindent 8 }}
{{- else if .value }}
topologySpreadConstraints:
  {{- toYaml .value | nindent 2 }}
{{- end }}
{{- end -}}
