{{/* Chart name, overridable. */}}
{{- define "bgworker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-<chart>" (or the release name when it already contains the chart name), made
a DNS-1035 label because every Service name is built on it: Helm accepts release names with
dots and with a leading digit ("a.b", "1"), Kubernetes refuses Service names with either. So
dots become dashes and a release name starting with a digit goes after the chart name
("bgworker-1"). Names that were valid before come out unchanged. */}}
{{- define "bgworker.fullname" -}}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- $full := "" }}
{{- if .Values.fullnameOverride }}
{{- $full = .Values.fullnameOverride }}
{{- else if contains $name .Release.Name }}
{{- $full = .Release.Name }}
{{- else if regexMatch "^[0-9]" .Release.Name }}
{{- $full = printf "%s-%s" $name .Release.Name }}
{{- else }}
{{- $full = printf "%s-%s" .Release.Name $name }}
{{- end }}
{{- $full = replace "." "-" $full }}
{{- if regexMatch "^[0-9]" $full }}
{{- $full = printf "%s-%s" $name $full }}
{{- end }}
{{- $full | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<fullname>-<suffix>" no longer than max: (dict "ctx" $ "suffix" "redis" "max" 52).
A name that does not fit keeps its suffix whole, cut the fullname, and gets 8 characters of
the fullname's sha256 in between: the suffix keeps the parts of one release apart, the hash
two long release names that share their first characters. Names that fit are unchanged. */}}
{{- define "bgworker.componentName" -}}
{{- $full := include "bgworker.fullname" .ctx }}
{{- $name := printf "%s-%s" $full .suffix }}
{{- if le (len $name) (int .max) }}
{{- $name }}
{{- else }}
{{- $keep := sub (int .max) (add (len .suffix) 10) }}
{{- printf "%s-%s-%s" (regexReplaceAll "-+$" (trunc (int $keep) $full) "") (sha256sum $full | trunc 8) .suffix }}
{{- end }}
{{- end }}

{{/* Names of the parts; every template and NOTES.txt go through these. Each limit comes from
what Kubernetes or KEDA derive from the name:
- Services are DNS-1035 labels: 63 characters.
- The StatefulSet controller labels its pods controller-revision-hash=<name>-<hash>, the hash
  up to 10 characters (k8s pkg/controller/history ControllerRevisionName; a label value has at
  most 63): 52, or the pod is never created.
- KEDA's admission webhook refuses a ScaledObject whose HPA name "keda-hpa-<name>" exceeds 63
  (kedacore/keda apis/keda/v1alpha1/scaledobject_webhook.go verifyName): 54 for the worker,
  whose Deployment, ScaledObject and TriggerAuthentication share the name. */}}
{{- define "bgworker.api.fullname" -}}
{{- include "bgworker.componentName" (dict "ctx" . "suffix" "api" "max" 63) }}
{{- end }}
{{- define "bgworker.auth.secretName" -}}
{{- .Values.auth.existingSecret | default (include "bgworker.componentName" (dict "ctx" . "suffix" "api-keys" "max" 253)) }}
{{- end }}
{{/* The API's keys, from the auth Secret (api/auth-secret.yaml or auth.existingSecret). */}}
{{- define "bgworker.api.authEnv" -}}
- name: BGWORKER_ADMIN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "bgworker.auth.secretName" . }}
      key: adminKey
- name: BGWORKER_URL_SIGNING_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "bgworker.auth.secretName" . }}
      key: urlSigningKey
{{- end }}
{{- define "bgworker.worker.fullname" -}}
{{- include "bgworker.componentName" (dict "ctx" . "suffix" "worker" "max" 54) }}
{{- end }}
{{- define "bgworker.redis.fullname" -}}
{{- include "bgworker.componentName" (dict "ctx" . "suffix" "redis" "max" 52) }}
{{- end }}
{{- define "bgworker.redis.headlessName" -}}
{{- include "bgworker.componentName" (dict "ctx" . "suffix" "redis-headless" "max" 63) }}
{{- end }}
{{- define "bgworker.smoke.fullname" -}}
{{- include "bgworker.componentName" (dict "ctx" . "suffix" "smoke" "max" 63) }}
{{- end }}
{{- define "bgworker.storage.claimName" -}}
{{- default (include "bgworker.componentName" (dict "ctx" . "suffix" "storage" "max" 63)) .Values.storage.existingClaim }}
{{- end }}

{{- define "bgworker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "bgworker.labels" -}}
helm.sh/chart: {{ include "bgworker.chart" . }}
{{ include "bgworker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bgworker
{{- end }}

{{/* Selector labels: stable across upgrades (no chart version in them). */}}
{{- define "bgworker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bgworker.name" . | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end }}

{{/* Labels and selector labels of one component: (dict "ctx" $ "component" "api"). */}}
{{- define "bgworker.componentLabels" -}}
{{ include "bgworker.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- define "bgworker.componentSelectorLabels" -}}
{{ include "bgworker.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "bgworker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bgworker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference: (dict "image" .Values.api.image "ctx" $). global.imageRegistry goes in
front of the repository; a digest pins the image and replaces the tag (repository@sha256:...). */}}
{{- define "bgworker.image" -}}
{{- $repository := .image.repository }}
{{- with (.ctx.Values.global | default dict).imageRegistry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}
{{- end }}
{{- if .image.digest }}
{{- printf "%s@%s" $repository .image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* Redis: where it is, and which Secret holds its password (empty: no password). */}}
{{- define "bgworker.redis.host" -}}
{{- if .Values.redis.enabled }}
{{- printf "%s.%s.svc" (include "bgworker.redis.fullname" .) .Release.Namespace }}
{{- else if .Values.externalRedis.url }}
{{- (split ":" (include "bgworker.redis.authority" .))._0 }}
{{- else }}
{{- required "externalRedis.host or externalRedis.url is required when redis.enabled is false" .Values.externalRedis.host }}
{{- end }}
{{- end }}

{{- define "bgworker.redis.port" -}}
{{- if .Values.redis.enabled }}
{{- .Values.redis.port }}
{{- else if .Values.externalRedis.url }}
{{- default "6379" (split ":" (include "bgworker.redis.authority" .))._1 }}
{{- else }}
{{- .Values.externalRedis.port }}
{{- end }}
{{- end }}

{{/* host[:port] of externalRedis.url, without scheme, user or password. */}}
{{- define "bgworker.redis.authority" -}}
{{- regexReplaceAll "^[a-z]+://([^@/]*@)?([^/?]+).*$" .Values.externalRedis.url "${2}" }}
{{- end }}

{{- define "bgworker.redis.database" -}}
{{- if .Values.redis.enabled }}0
{{- else if .Values.externalRedis.url }}
{{- $m := regexFind "/[0-9]+([?].*)?$" .Values.externalRedis.url | regexFind "/[0-9]+" }}
{{- if $m }}{{ trimPrefix "/" $m }}{{ else }}0{{ end }}
{{- else }}
{{- .Values.externalRedis.database }}
{{- end }}
{{- end }}

{{- define "bgworker.redis.tls" -}}
{{- if .Values.redis.enabled }}false
{{- else if .Values.externalRedis.url }}
{{- hasPrefix "rediss://" .Values.externalRedis.url }}
{{- else }}
{{- .Values.externalRedis.tls }}
{{- end }}
{{- end }}

{{- define "bgworker.redis.url" -}}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.url }}
{{- .Values.externalRedis.url }}
{{- else }}
{{- printf "%s://%s:%s/%s" (ternary "rediss" "redis" (eq (include "bgworker.redis.tls" .) "true")) (include "bgworker.redis.host" .) (include "bgworker.redis.port" .) (include "bgworker.redis.database" .) }}
{{- end }}
{{- end }}

{{/* "true" when the pods and KEDA find the primary through Redis Sentinel
(externalRedis.sentinel.hosts), else empty; refuses the combinations bgworker's settings
refuse too. */}}
{{- define "bgworker.redis.sentinel" -}}
{{- $s := .Values.externalRedis.sentinel }}
{{- if $s.hosts }}
{{- if .Values.redis.enabled }}
{{- fail "externalRedis.sentinel.hosts needs redis.enabled=false: the built-in Redis has no sentinels" }}
{{- end }}
{{- if not $s.masterName }}
{{- fail "externalRedis.sentinel.masterName is required with externalRedis.sentinel.hosts: the name the sentinels monitor the primary under" }}
{{- end }}
{{- if .Values.externalRedis.url }}
{{- fail "externalRedis.url and externalRedis.sentinel.hosts are both set: give one (with Sentinel the primary's address comes from the sentinels)" }}
{{- end }}
{{- if .Values.externalRedis.tls }}
{{- fail "externalRedis.tls is not supported with externalRedis.sentinel" }}
{{- end }}
{{- "true" }}
{{- end }}
{{- end }}

{{/* The Secret with the sentinels' own password; empty without Sentinel or password. */}}
{{- define "bgworker.redis.sentinelSecretName" -}}
{{- if include "bgworker.redis.sentinel" . }}
{{- .Values.externalRedis.sentinel.existingSecret }}
{{- end }}
{{- end }}

{{- define "bgworker.redis.secretName" -}}
{{- if .Values.redis.enabled }}
{{- default (include "bgworker.redis.fullname" .) .Values.redis.auth.existingSecret }}
{{- else }}
{{- .Values.externalRedis.existingSecret }}
{{- end }}
{{- end }}

{{- define "bgworker.redis.secretKey" -}}
{{- if .Values.redis.enabled }}
{{- .Values.redis.auth.existingSecretPasswordKey }}
{{- else }}
{{- .Values.externalRedis.existingSecretPasswordKey }}
{{- end }}
{{- end }}

{{/* Environment shared by the API and worker containers: the sentinels' password. Redis'
own password is a file (bgworker.redis.env, bgworker.redis.volumes). */}}
{{- define "bgworker.env" -}}
{{- with include "bgworker.redis.sentinelSecretName" . }}
- name: BGWORKER_REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.externalRedis.sentinel.existingSecretPasswordKey }}
{{- end }}
{{- end }}

{{- define "bgworker.envFrom" -}}
- configMapRef:
    name: {{ include "bgworker.fullname" . }}
{{- end }}

{{/* Pod annotations that roll the pods when their configuration changes. */}}
{{- define "bgworker.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if and .Values.redis.enabled (not .Values.redis.auth.existingSecret) }}
checksum/redis-secret: {{ include "bgworker.redis.secretChecksum" . }}
{{- end }}
{{- end }}

{{/* What the pods' Redis password depends on: the generated Secret's name and key. Not the
rendered Secret: at install each include of redis/secret.yaml draws a new random password,
so the pods' checksum matched no Secret, the first `helm upgrade` (which reads the kept
password back) computed another, and restarted Redis and every pod (seen on the real
cluster, tests/e2e/kind). A generated password never changes: redis/secret.yaml keeps it. */}}
{{- define "bgworker.redis.secretChecksum" -}}
{{- list (include "bgworker.redis.fullname" .) .Values.redis.auth.existingSecretPasswordKey | toJson | sha256sum }}
{{- end }}

{{/* Who one Redis client is: (dict "ctx" $ "component" "api"|"worker"|"keda") gives
{"user": ..., "secret": ..., "key": ...} as JSON, "secret" empty when Redis has no password.
With the built-in Redis and redis.acl.enabled each component is its own ACL user (see
bgworker.redis.aclRules), else all of them use the one password of externalRedis or
redis.auth. */}}
{{- define "bgworker.redis.credentials" -}}
{{- $v := .ctx.Values }}
{{- if and $v.redis.enabled $v.redis.acl.enabled }}
{{- $keys := dict "api" $v.redis.acl.apiPasswordKey "worker" $v.redis.acl.workerPasswordKey "keda" $v.redis.acl.kedaPasswordKey }}
{{- dict "user" .component "secret" (include "bgworker.redis.secretName" .ctx) "key" (get $keys .component) | toJson }}
{{- else }}
{{- dict "user" "" "secret" (include "bgworker.redis.secretName" .ctx) "key" (include "bgworker.redis.secretKey" .ctx) | toJson }}
{{- end }}
{{- end }}

{{/* What each ACL user of the built-in Redis may do: the commands bgworker, kombu (Celery's
transport) and KEDA's redis scaler send, on the keys they use, and nothing else (no
FLUSHALL, CONFIG, KEYS, DEBUG, ACL, MONITOR, SHUTDOWN). Found in worker/ and api/ (every
redis-py call and every redis.call of their Lua scripts), kombu/transport/redis.py, and
KEDA's pkg/scalers/redis_scaler.go; tests/chart/test_redis_acl.py runs a whole job as these
users on a real redis-server and fails on any command Redis refuses them.
- Keys: bgworker's own (bgworker:*), the queue lists with kombu's priority sub-lists
  (critical*, default*, low*), kombu's unacked, unacked_index, unacked_mutex and routing
  tables (_kombu.*), and for workers their remote-control (pidbox) queues.
- Both: scripts (EVAL/EVALSHA, SCRIPT LOAD/EXISTS; Redis checks every command a script
  runs against these rules too), MULTI/EXEC pipelines, and the data commands of job
  records (hashes), sets of active/scheduled/dead jobs (sorted sets), event streams, queues.
- The API: XREAD (one blocking read for every event stream) and CLIENT ID/UNBLOCK (to wake
  it), the reaper's HVALS/LRANGE/ZRANGE.
- Workers: BRPOP/RPOP (taking messages), RPUSH (kombu restores a message whose visibility
  timeout passed with RPUSH; the real cluster found it refused), and kombu's pidbox broadcast (PUBLISH,
  PSUBSCRIBE of /0.celery.pidbox, as a literal pattern: Redis matches a PSUBSCRIBE against the
  allowed channel patterns literally; the built-in Redis has only database 0).
- KEDA: on connect HELLO/AUTH (always allowed) and PING, then one EVAL of a script that
  runs TYPE and LLEN, HLEN, SCARD or ZCARD on the list it counts: read-only, and only on
  the queues and unacked. (CLIENT SETINFO, which Redis 7.2+ clients send on connect, is
  left out: it fails harmlessly, and Redis 7.0 does not know it.) The API also reads
  INFO (memory: new jobs stop short of maxmemory, api/quotas.py). */}}
{{- define "bgworker.redis.aclRules" -}}
{{- $data := "+get +set +del +exists +expire +incr +hset +hsetnx +hget +hmget +hgetall +hincrby +hincrbyfloat +hlen +hexists +hvals +hdel +zadd +zrem +zrange +zrevrange +zrangebyscore +zcard +zscore +lpush +llen +lrange +lindex +xadd +xrange +xrevrange +sadd +smembers +srem" }}
{{- $base := "resetkeys ~bgworker:* ~critical* ~default* ~low* ~unacked ~unacked_index ~unacked_mutex ~_kombu.* -@all +ping +select +multi +exec +discard +watch +unwatch +eval +evalsha +script|load +script|exists +time" }}
{{- if eq . "api" }}
{{- printf "resetchannels %s %s +xread +client|id +client|unblock +info" $base $data }}
{{- else if eq . "worker" }}
{{- printf "resetchannels &/0.celery.pidbox %s ~*.celery.pidbox* %s +brpop +rpop +rpush +publish +psubscribe +punsubscribe +subscribe +unsubscribe" $base $data }}
{{- else if eq . "keda" }}
{{- "resetchannels resetkeys ~critical ~default ~low ~unacked -@all +ping +eval +type +llen +hlen +scard +zcard" }}
{{- end }}
{{- end }}

{{/* The Redis password file and ACL user name of an API or worker container:
(dict "ctx" $ "component" "api"). The password is a file from the Secret (bgworker.redis.volumes). */}}
{{- define "bgworker.redis.env" -}}
{{- $c := include "bgworker.redis.credentials" . | fromJson }}
{{- if $c.secret }}
- name: BGWORKER_REDIS_PASSWORD_FILE
  value: /etc/bgworker/redis/password
{{- end }}
{{- if $c.user }}
- name: BGWORKER_REDIS_USERNAME
  value: {{ $c.user | quote }}
{{- end }}
{{- end }}

{{/* The Secret with the CA bundle that verifies external Redis' certificate; empty without
one. Refuses a CA without TLS and a CA with tlsInsecure. */}}
{{- define "bgworker.redis.tlsCASecret" -}}
{{- $e := .Values.externalRedis }}
{{- if and (not .Values.redis.enabled) $e.tlsCA.existingSecret }}
{{- if ne (include "bgworker.redis.tls" .) "true" }}
{{- fail "externalRedis.tlsCA needs TLS: set externalRedis.tls=true or use a rediss:// externalRedis.url" }}
{{- end }}
{{- if $e.tlsInsecure }}
{{- fail "externalRedis.tlsCA and externalRedis.tlsInsecure are both set: the CA is for verifying Redis' certificate, tlsInsecure turns verification off; give one" }}
{{- end }}
{{- $e.tlsCA.existingSecret }}
{{- end }}
{{- end }}

{{/* "true" when the connection to external Redis is TLS without verification. */}}
{{- define "bgworker.redis.tlsInsecure" -}}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.tlsInsecure }}
{{- if ne (include "bgworker.redis.tls" .) "true" }}
{{- fail "externalRedis.tlsInsecure needs TLS: set externalRedis.tls=true or use a rediss:// externalRedis.url" }}
{{- end }}
{{- "true" }}
{{- end }}
{{- end }}

{{/* The Redis password and CA files of an API or worker pod: (dict "ctx" $ "component" "api"). */}}
{{- define "bgworker.redis.volumes" -}}
{{- $c := include "bgworker.redis.credentials" . | fromJson }}
{{- if $c.secret }}
- name: redis-password
  secret:
    secretName: {{ $c.secret }}
    defaultMode: 0440
    items:
      - key: {{ $c.key }}
        path: password
{{- end }}
{{- with include "bgworker.redis.tlsCASecret" .ctx }}
- name: redis-ca
  secret:
    secretName: {{ . }}
    defaultMode: 0444
    items:
      - key: {{ $.ctx.Values.externalRedis.tlsCA.key }}
        path: ca.crt
{{- end }}
{{- end }}
{{- define "bgworker.redis.volumeMounts" -}}
{{- $c := include "bgworker.redis.credentials" . | fromJson }}
{{- if $c.secret }}
- name: redis-password
  mountPath: /etc/bgworker/redis
  readOnly: true
{{- end }}
{{- if include "bgworker.redis.tlsCASecret" .ctx }}
- name: redis-ca
  mountPath: /etc/bgworker/redis-ca
  readOnly: true
{{- end }}
{{- end }}

{{/* /tmp and the shared storage, mounted the same way in API and worker pods. */}}
{{- define "bgworker.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .sizeLimit }}
- name: storage
  persistentVolumeClaim:
    claimName: {{ include "bgworker.storage.claimName" .ctx }}
{{- include "bgworker.redis.volumes" . }}
{{- end }}
{{- define "bgworker.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: storage
  mountPath: {{ .ctx.Values.storage.mountPath }}
{{- include "bgworker.redis.volumeMounts" . }}
{{- end }}

{{/* Grace period the kubelet gives a worker: the shutdown deadline plus Celery's teardown. */}}
{{- define "bgworker.worker.terminationGracePeriodSeconds" -}}
{{- add .Values.worker.shutdownTimeout .Values.worker.terminationGraceMarginSeconds }}
{{- end }}

{{/* Pod spec fields every pod of the chart shares: (dict "ctx" $ "values" .Values.api). */}}
{{- define "bgworker.podCommon" -}}
{{- /* Kubernetes injects <SERVICE>_PORT, <SERVICE>_SERVICE_HOST and friends for every Service
in the namespace: for a release named "bgworker" those are BGWORKER_* names that bgworker's
settings check refuses as unknown, and nothing here reads them. */}}
enableServiceLinks: {{ .ctx.Values.enableServiceLinks }}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- end }}

{{/* "true" while the shared storage can be attached to one node only (ReadWriteOnce): then
every pod that mounts it must run on that node. For storage.existingClaim the chart cannot
see the claim, so storage.accessModes says what it has. */}}
{{- define "bgworker.storage.sameNode" -}}
{{- not (has "ReadWriteMany" .Values.storage.accessModes) }}
{{- end }}

{{/* The components whose pods mount the shared storage. */}}
{{- define "bgworker.storage.components" -}}
{{- list "api" "worker" | toJson }}
{{- end }}

{{/* Where a pod may run: (dict "ctx" $ "component" "api" "values" .Values.api).
nodeSelector, tolerations and affinity as given; a pod that mounts ReadWriteOnce storage also
gets a required podAffinity to the pods that mount it, so all of them share the node the
volume is attached to (pods elsewhere would hang in ContainerCreating on Multi-Attach). The
first of them is not left waiting for itself: the scheduler lets a pod through when no other
pod matches its affinity term and it matches the term itself (kube-scheduler
plugins/interpodaffinity satisfyPodAffinity), which covers the first install, KEDA waking
workers from zero while the API is down, and a move to another node once every old pod is
gone. An entry of topologySpreadConstraints without labelSelector gets the component's pod
labels (without one it would count no pods). */}}
{{- define "bgworker.podScheduling" -}}
{{- $v := .values }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $affinity := deepCopy ($v.affinity | default dict) }}
{{- $mounts := has .component (include "bgworker.storage.components" . | fromJsonArray) }}
{{- if and $mounts (eq (include "bgworker.storage.sameNode" .ctx) "true") }}
{{- $podAffinity := get $affinity "podAffinity" | default dict }}
{{- $terms := get $podAffinity "requiredDuringSchedulingIgnoredDuringExecution" | default list }}
{{- $selector := dict "matchLabels" (include "bgworker.selectorLabels" .ctx | fromYaml) "matchExpressions" (list (dict "key" "app.kubernetes.io/component" "operator" "In" "values" (include "bgworker.storage.components" . | fromJsonArray))) }}
{{- $term := dict "labelSelector" $selector "topologyKey" "kubernetes.io/hostname" }}
{{- $_ := set $podAffinity "requiredDuringSchedulingIgnoredDuringExecution" (append $terms $term) }}
{{- $_ := set $affinity "podAffinity" $podAffinity }}
{{- end }}
{{- with $affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.topologySpreadConstraints }}
{{- $constraints := list }}
{{- range . }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" (include "bgworker.componentSelectorLabels" (dict "ctx" $.ctx "component" $.component) | fromYaml)) }}
{{- end }}
{{- $constraints = append $constraints $c }}
{{- end }}
topologySpreadConstraints:
  {{- toYaml $constraints | nindent 2 }}
{{- end }}
{{- end }}

{{/* A quantity in bytes, to compare two spellings of one size: the API server hands back
the canonical one ("8192Mi" comes back as "8Gi"). Anything else comes back as written. */}}
{{- define "bgworker.quantityBytes" -}}
{{- $q := toString . }}
{{- $units := dict "" 1.0 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 }}
{{- $number := regexFind "^[0-9]+([.][0-9]+)?" $q }}
{{- $unit := trimPrefix $number $q }}
{{- if and $number (hasKey $units $unit) }}
{{- mulf (float64 $number) (get $units $unit) | printf "%.0f" }}
{{- else }}
{{- $q }}
{{- end }}
{{- end }}

{{/* Refuse a change of redis.persistence.* that the upgrade could not apply: a StatefulSet's
volumeClaimTemplates are immutable (the API server answers "Forbidden: updates to statefulset
spec for fields other than ..." after Helm has applied the rest of the release).
(dict "ctx" $ "existing" <the StatefulSet in the cluster>): the template passes lookup's
answer, which is empty on a first install and wherever there is no cluster (helm template,
--dry-run=client), so the check then has nothing to compare with and passes. */}}
{{- define "bgworker.redis.checkPersistence" -}}
{{- $p := .ctx.Values.redis.persistence }}
{{- with .existing }}
{{- $sts := printf "%s/%s" .metadata.namespace .metadata.name }}
{{- $old := dict }}
{{- range (dig "spec" "volumeClaimTemplates" list .) }}
{{- if eq (dig "metadata" "name" "" .) "data" }}{{ $old = . }}{{ end }}
{{- end }}
{{- $value := "" }}
{{- $was := "" }}
{{- $now := "" }}
{{- if and $old (not $p.enabled) }}
{{- $value = "enabled" }}{{ $was = "true" }}{{ $now = "false" }}
{{- else if and (not $old) $p.enabled }}
{{- $value = "enabled" }}{{ $was = "false" }}{{ $now = "true" }}
{{- else if $old }}
{{- $oldSize := dig "spec" "resources" "requests" "storage" "" $old }}
{{- $oldClass := dig "spec" "storageClassName" "" $old }}
{{- if ne (include "bgworker.quantityBytes" $oldSize) (include "bgworker.quantityBytes" $p.size) }}
{{- $value = "size" }}{{ $was = $oldSize }}{{ $now = $p.size }}
{{- else if ne $oldClass $p.storageClassName }}
{{- $value = "storageClassName" }}{{ $was = $oldClass | quote }}{{ $now = $p.storageClassName | quote }}
{{- end }}
{{- end }}
{{- if $value }}
{{- $ns := .metadata.namespace }}
{{- fail (printf "redis.persistence.%s: the Redis StatefulSet %s was installed with %s, this upgrade asks for %s, and Kubernetes cannot change a StatefulSet's volumeClaimTemplates. Either keep the installed value (--set redis.persistence.%s=%s), or delete the StatefulSet but not its pod and volume (kubectl -n %s delete statefulset %s --cascade=orphan) and run the upgrade again: the chart then creates the StatefulSet anew and it adopts the running pod and its claim data-%s-0, whose size does not change with it (grow the claim with kubectl patch pvc if its StorageClass allows expansion). Drain the workers first (docs/operations.md) when the change moves Redis to another volume." $value $sts $was $now $value $was $ns .metadata.name .metadata.name) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Where a KEDA trigger reads Redis: `address` for the redis trigger, or the sentinels'
`addresses` and the primary's name for the redis-sentinel trigger (KEDA's
redis-sentinel-lists scaler). (dict "ctx" $ "address" "host:port") */}}
{{- define "bgworker.keda.redisAddress" -}}
{{- if include "bgworker.redis.sentinel" .ctx }}
addresses: {{ join "," .ctx.Values.externalRedis.sentinel.hosts | quote }}
sentinelMaster: {{ .ctx.Values.externalRedis.sentinel.masterName | quote }}
{{- else }}
address: {{ .address | quote }}
{{- end }}
{{- end }}
