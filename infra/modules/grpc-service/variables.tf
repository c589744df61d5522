variable "project_id" {
  description = "Project the service runs in."
  type        = string
}

variable "region" {
  description = "Cloud Run region, e.g. europe-west1."
  type        = string
}

variable "name" {
  description = "Cloud Run service name; also part of its URL (https://<name>-<project number>.<region>.run.app)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,47}[a-z0-9])?$", var.name))
    error_message = "name must be 1-49 lowercase letters, digits or hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "service_account_id" {
  description = "Account id of the service's own, dedicated service account (its identity when it calls other services)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.service_account_id))
    error_message = "service_account_id must be 6-30 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "image" {
  description = "Container image by digest, e.g. europe-west1-docker.pkg.dev/<project>/<repository>/route@sha256:<digest> (a precondition refuses a tag)."
  type        = string

  validation {
    condition     = length(trimspace(var.image)) > 0
    error_message = "image must not be empty."
  }
}

variable "health_service" {
  description = "grpc.health.v1 service name the startup probe asks for (the liveness probe asks for \"\", the whole server). It must be a name the service registers with its health implementation (an unregistered name is NOT_FOUND, and the probe fails)."
  type        = string
}

variable "container_port" {
  description = "Port the container listens on; Cloud Run passes it as $PORT."
  type        = number
  default     = 8080
}

variable "ingress" {
  description = "Who may reach the service at the network level: INGRESS_TRAFFIC_ALL (the gateway) or INGRESS_TRAFFIC_INTERNAL_ONLY (services only other services of the project call)."
  type        = string

  validation {
    condition     = contains(["INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"], var.ingress)
    error_message = "ingress must be INGRESS_TRAFFIC_ALL, INGRESS_TRAFFIC_INTERNAL_ONLY or INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER."
  }
}

variable "invokers" {
  description = "Who may call the service: a label => IAM member (serviceAccount:<email> or user:<email>). Each gets roles/run.invoker on this service, and the same emails become the service's own allow-list (AUTH_ALLOWED_INVOKERS), checked against every verified token. Labels must be known at plan time; members may not be."
  type        = map(string)

  validation {
    condition     = alltrue([for member in values(var.invokers) : can(regex("^(serviceAccount|user):[^@[:space:]]+@[^@[:space:]]+$", member))])
    error_message = "invokers must be serviceAccount:<email> or user:<email>: the service checks callers by the email in their ID token, so groups, domains, allUsers and allAuthenticatedUsers cannot be used."
  }
}

variable "invoker_methods" {
  description = "Invoker label (a key of invokers) => the methods of this service's own API it may call, e.g. { gateway = [\"GetStats\", \"WatchStats\"] } (from infra/topology.json). An invoker without an entry may call every method. Enforced in the container (AUTH_ALLOWED_INVOKERS email=M1|M2): roles/run.invoker is per service only."
  type        = map(list(string))
  default     = {}

  validation {
    condition     = alltrue(flatten([for label, methods in var.invoker_methods : [for method in methods : can(regex("^[A-Z][A-Za-z0-9]*$", method))]])) && alltrue([for label, methods in var.invoker_methods : length(methods) > 0])
    error_message = "invoker_methods must map invoker labels to non-empty lists of method names such as GetStats."
  }
}

variable "end_user_from" {
  description = "Emails of the callers whose x-end-user (the end client they call for) this service believes: the gateway's service account for the services it calls (AUTH_END_USER_FROM). Empty: it believes nobody's, and counts every call as its verified caller's."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for email in var.end_user_from : can(regex("^[^@,[:space:]]+@[^@,[:space:]]+$", email))])
    error_message = "end_user_from must list email addresses."
  }
}

variable "public" {
  description = "Serve calls without an ID token (as the anonymous caller; a token that is sent must still verify): Cloud Run's invoker IAM check is turned off (invoker_iam_disabled) and AUTH_MODE is optional. Only the gateway may be public (a precondition refuses any other service)."
  type        = bool
  default     = false
}

variable "peers" {
  description = "Peer URL variable => URL of each service this one calls (e.g. STATS_URL => the stats module's url output). The URL is also the audience of the ID tokens this service sends there. Only <SERVICE>_URL names: no AUTH_* (AUTH_JWKS_URL would replace the token issuer's keys) and no other *_URL setting."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for key, url in var.peers : can(regex("^[A-Z][A-Z0-9]*_URL$", key)) && !startswith(key, "AUTH_") && can(regex("^https://[^/?#[:space:]]+$", url))])
    error_message = "peers must map <SERVICE>_URL variables (one word, e.g. STATS_URL; never AUTH_*) to https:// URLs without a path."
  }
}

variable "env" {
  description = "More environment variables for the container (limits, log level, ...). PORT is set by Cloud Run, AUTH_* and SHUTDOWN_GRACE_MS by this module: none may be set here."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for key in keys(var.env) : !contains(["PORT", "SHUTDOWN_GRACE_MS"], key) && !startswith(key, "AUTH_")])
    error_message = "env must not set PORT (Cloud Run sets it), SHUTDOWN_GRACE_MS (shutdown_grace_ms, checked against Cloud Run's 10 s) or AUTH_* (derived from the service URL and invokers)."
  }
}

variable "vpc_egress" {
  description = "Send all of the service's outgoing traffic through this VPC subnet (Direct VPC egress). Required on callers of internal-ingress services: only calls that leave through the VPC count as internal. null: no VPC."
  type = object({
    network    = string
    subnetwork = string
  })
  default = null
}

variable "min_instances" {
  description = "Instances kept warm (0 allows scale to zero and cold starts)."
  type        = number
  default     = 0

  validation {
    condition     = var.min_instances >= 0
    error_message = "min_instances must be 0 or more."
  }
}

variable "max_instances" {
  description = "Upper bound on instances (cost and downstream load)."
  type        = number
  default     = 10

  validation {
    condition     = var.max_instances >= 1 && var.max_instances <= 1000
    error_message = "max_instances must be between 1 and 1000."
  }
}

variable "max_concurrency" {
  description = "Concurrent requests per instance. Every open gRPC stream holds one for its whole life."
  type        = number
  default     = 100

  validation {
    condition     = var.max_concurrency >= 1 && var.max_concurrency <= 1000
    error_message = "max_concurrency must be between 1 and 1000."
  }
}

variable "request_timeout_seconds" {
  description = "Cloud Run ends any request, streams included, after this long (at most 3600 s)."
  type        = number
  default     = 3600

  validation {
    condition     = var.request_timeout_seconds >= 1 && var.request_timeout_seconds <= 3600
    error_message = "request_timeout_seconds must be between 1 and 3600."
  }
}

variable "cpu" {
  description = "CPU limit per instance, e.g. \"1\" or \"2\"."
  type        = string
  default     = "1"
}

variable "memory" {
  description = "Memory limit per instance, e.g. \"512Mi\"."
  type        = string
  default     = "512Mi"
}

variable "cpu_always_allocated" {
  description = "Keep CPU allocated between requests (instance-based billing). Needed when the service works off the request path, as route does when it sends its reports to stats."
  type        = bool
  default     = false
}

variable "labels" {
  description = "Labels on the service and its revisions."
  type        = map(string)
  default     = {}
}

variable "deletion_protection" {
  description = "Refuse terraform destroy of the service."
  type        = bool
  default     = true
}

variable "custom_audiences" {
  description = "Audiences besides the service's run.app URL that callers' ID tokens may carry (a custom domain, a load balancer): https:// URLs as callers name them. Cloud Run's edge accepts them (custom_audiences) and so does the container (AUTH_AUDIENCES)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for audience in var.custom_audiences : can(regex("^https://[^/?#,[:space:]]+$", audience))])
    error_message = "custom_audiences must be https:// URLs without a path or trailing slash (e.g. https://api.example.com): the container compares a token's aud with them exactly."
  }
}

variable "project_roles" {
  description = "Project roles for the service's own account, each limited by an IAM condition ({ title, expression } in CEL, e.g. on one Cloud SQL instance's resource.name), granted before the service is created."
  type = map(object({
    title      = string
    expression = string
  }))
  default = {}

  validation {
    condition     = alltrue([for role, condition in var.project_roles : startswith(role, "roles/") && length(trimspace(condition.expression)) > 0])
    error_message = "project_roles must map roles/<name> to a non-empty condition expression."
  }
}

variable "shutdown_grace_ms" {
  description = "SHUTDOWN_GRACE_MS: how long calls in flight may run after SIGTERM. Cloud Run sends SIGKILL 10 s after SIGTERM; a stop takes at most this plus 2.1 s (0.1 s for the last statuses to be written, then afterShutdown gets at least 1 s, then up to 1 s to flush the logs: runService and startService in packages/runtime/src/lifecycle.ts, startGrpcServer in server.ts). 6 s leaves 1.9 s to spare; test/infra.test.ts checks the sum and measures a real stop."
  type        = number
  default     = 6000

  validation {
    condition     = var.shutdown_grace_ms >= 0 && var.shutdown_grace_ms <= 6400
    error_message = "shutdown_grace_ms must be 0 to 6400: a stop takes it plus up to 2.1 s, and at least 1.5 s of Cloud Run's 10 s between SIGTERM and SIGKILL must stay spare."
  }
}

variable "telemetry" {
  description = "Export the service's spans (Cloud Trace) and RPC metrics (Cloud Monitoring) through Google's Telemetry API (TELEMETRY_EXPORT=google-cloud), with the roles that takes on the service's account. A trace the caller sampled is always kept: on Cloud Run the front end samples at most 0.1 requests per second per instance (https://cloud.google.com/run/docs/trace), so that is the gateway's rate; the container's OTEL_TRACES_SAMPLER_ARG (0.01) applies only to traces that start without a decision (route's batches)."
  type        = bool
  default     = true
}
