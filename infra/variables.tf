variable "project_id" {
  description = "Google Cloud project to deploy into."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project id (6-30 lowercase letters, digits or hyphens), not its name or number."
  }
}

variable "region" {
  description = "Region of the Cloud Run services, the image repository and the subnet."
  type        = string
  default     = "europe-west1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a region such as europe-west1 (not a zone)."
  }
}

variable "image_digests" {
  description = "Digest of each service's image in the repository, e.g. { gateway = \"sha256:…\", route = …, stats = … }: scripts/deploy.sh passes what it built or found for the commit. The services run these exact images (a digest cannot move; each new one is a new revision)."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for name, digest in var.image_digests : contains(["gateway", "route", "stats"], name) && can(regex("^sha256:[0-9a-f]{64}$", digest))])
    error_message = "image_digests must map gateway, route and stats to sha256:<64 hex digits> (scripts/deploy.sh passes them)."
  }
}

variable "repository_id" {
  description = "Artifact Registry repository that holds the images."
  type        = string
  default     = "routeguide"

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", var.repository_id))
    error_message = "repository_id must be lowercase letters, digits and hyphens."
  }
}

variable "gateway_invokers" {
  description = "Who else may call the gateway: IAM members user:<email> or serviceAccount:<email> (groups and domains cannot be checked inside the service). Added to infra/topology.json's external_invokers of the gateway."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for member in var.gateway_invokers : can(regex("^(serviceAccount|user):[^@[:space:]]+@[^@[:space:]]+$", member))])
    error_message = "gateway_invokers must be user:<email> or serviceAccount:<email> members; never allUsers or allAuthenticatedUsers."
  }
}

variable "gateway_public" {
  description = "Make the gateway public: calls without an ID token are served as the anonymous caller (a token that is sent must still verify), through Cloud Run's invoker_iam_disabled rather than an allUsers binding. route and stats are never public. Default false: only gateway_invokers, the topology's external invokers and routeguide-client may call it."
  type        = bool
  default     = false
}

variable "gateway_custom_audiences" {
  description = "Other URLs the gateway is called by, e.g. [\"https://api.example.com\"] for a custom domain or a load balancer in front of it: ID tokens minted for them are accepted by Cloud Run (custom_audiences) and by the gateway itself (AUTH_AUDIENCES), besides its run.app URL."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for audience in var.gateway_custom_audiences : can(regex("^https://[^/?#,[:space:]]+$", audience))])
    error_message = "gateway_custom_audiences must be https:// URLs without a path or trailing slash, as callers name them (e.g. https://api.example.com): the gateway compares a token's aud with them exactly."
  }
}

variable "client_token_creators" {
  description = "Members allowed to mint ID tokens as the routeguide-client service account (roles/iam.serviceAccountOpenIdTokenCreator): the deployer, CI. That account may call the gateway; the smoke call and the deployed test suite use it."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for member in var.client_token_creators : can(regex("^(user|serviceAccount|group):[^@[:space:]]+@[^@[:space:]]+$", member))])
    error_message = "client_token_creators must be user:, serviceAccount: or group: members."
  }
}

variable "subnet_cidr" {
  description = "Range of the subnet the callers' Direct VPC egress uses (at least a /26; a /24 leaves room to scale)."
  type        = string
  default     = "10.8.0.0/24"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0)) && tonumber(split("/", var.subnet_cidr)[1]) <= 26
    error_message = "subnet_cidr must be an IPv4 range of size /26 or larger, e.g. 10.8.0.0/24."
  }
}

variable "max_instances" {
  description = "Upper bound on instances per service."
  type        = number
  default     = 10

  validation {
    condition     = var.max_instances >= 1 && var.max_instances <= 1000
    error_message = "max_instances must be between 1 and 1000."
  }
}

variable "gateway_min_instances" {
  description = "Gateway instances kept warm (0: scale to zero, with cold starts on the first call)."
  type        = number
  default     = 0

  validation {
    condition     = var.gateway_min_instances >= 0
    error_message = "gateway_min_instances must be 0 or more."
  }
}

variable "log_level" {
  description = "LOG_LEVEL of every service."
  type        = string
  default     = "info"

  validation {
    condition     = contains(["fatal", "error", "warn", "info", "debug", "trace"], var.log_level)
    error_message = "log_level must be one of fatal, error, warn, info, debug, trace."
  }
}

variable "deletion_protection" {
  description = "Protect the Cloud Run services from terraform destroy (set false for throwaway stacks)."
  type        = bool
  default     = true
}

variable "stats_database_instance" {
  description = "Name of the Cloud SQL for PostgreSQL instance that holds stats' aggregates."
  type        = string
  default     = "routeguide-stats"

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,96}[a-z0-9])?$", var.stats_database_instance))
    error_message = "stats_database_instance must be lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "stats_database_tier" {
  description = "Machine type of the Cloud SQL instance (Enterprise edition), e.g. db-custom-1-3840."
  type        = string
  default     = "db-custom-1-3840"
}

variable "stats_database_availability" {
  description = "ZONAL, or REGIONAL for a standby in another zone (failover, twice the cost)."
  type        = string
  default     = "ZONAL"

  validation {
    condition     = contains(["ZONAL", "REGIONAL"], var.stats_database_availability)
    error_message = "stats_database_availability must be ZONAL or REGIONAL."
  }
}

variable "stats_database_pool_max" {
  description = "Connections each stats instance keeps to Cloud SQL (plus one for LISTEN). max_instances × (this + 1) must stay under the instance's max_connections (100 on the smallest tiers)."
  type        = number
  default     = 5

  validation {
    condition     = var.stats_database_pool_max >= 1 && var.stats_database_pool_max <= 100
    error_message = "stats_database_pool_max must be between 1 and 100."
  }
}
