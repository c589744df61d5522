# One gRPC service on Cloud Run: its own service account, the Cloud Run service (HTTP/2 end to
# end, gRPC health probes) and the run.invoker bindings of exactly the identities that may call it.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  # Cloud Run's deterministic URL. The service's own environment needs it (the audience its
  # callers' tokens carry), and an attribute of the service resource cannot feed its own env.
  url = "https://${var.name}-${data.google_project.this.number}.${var.region}.run.app"

  # The emails in the invokers' ID tokens: the in-container check of every call.
  invoker_emails = [for member in values(var.invokers) : split(":", member)[1]]

  # The in-container allow-list, per method: "email" (every method) or "email=M1|M2" for an
  # invoker with an entry in var.invoker_methods. roles/run.invoker below is per service only
  # (Cloud Run's IAM has no per-method grant): the container's check is what limits methods.
  allowed_invokers = [
    for label, member in var.invokers : (
      contains(keys(var.invoker_methods), label)
      ? "${split(":", member)[1]}=${join("|", var.invoker_methods[label])}"
      : split(":", member)[1]
    )
  ]

  container_env = merge(var.env, var.peers, {
    # optional: calls without a token are served as the anonymous caller; a token that is
    # present must still verify. Only with var.public (the gateway; see the precondition).
    AUTH_MODE = var.public ? "optional" : "verify"
    # Its run.app URL and any custom audiences: the same list Cloud Run's edge accepts.
    AUTH_AUDIENCES        = join(",", concat([local.url], var.custom_audiences))
    AUTH_ALLOWED_INVOKERS = join(",", local.allowed_invokers)
    # Whose x-end-user this service believes (the gateway's account); empty: nobody's.
    AUTH_END_USER_FROM = join(",", var.end_user_from)
    # Log lines name their trace as projects/<id>/traces/<trace>, which Cloud Logging links
    # to Cloud Trace (Cloud Run sets no variable with the project id).
    GOOGLE_CLOUD_PROJECT = var.project_id
    # Within Cloud Run's 10 s between SIGTERM and SIGKILL, with a margin (see the variable).
    SHUTDOWN_GRACE_MS = tostring(var.shutdown_grace_ms)
    # Spans to Cloud Trace and RPC metrics to Cloud Monitoring, through Google's Telemetry
    # (OTLP) API with the service's own account (packages/runtime/src/telemetry-export.ts).
    TELEMETRY_EXPORT = var.telemetry ? "google-cloud" : "off"
    # The region on the spans' and metrics' resource: Cloud Monitoring's prometheus_target
    # needs a location, and Cloud Run sets no variable with the region (the OpenTelemetry
    # SDK reads OTEL_RESOURCE_ATTRIBUTES).
    OTEL_RESOURCE_ATTRIBUTES = "cloud.region=${var.region}"
  })

  # What writing through the Telemetry API takes, and no more: telemetry.traces.write
  # (roles/telemetry.tracesWriter), metrics (roles/telemetry.metricsWriter), and, since the
  # exporter names its quota project (x-goog-user-project), serviceusage.services.use on it
  # (roles/serviceusage.serviceUsageConsumer): https://docs.cloud.google.com/stackdriver/docs/otlp/overview
  # ("Authentication") and https://docs.cloud.google.com/iam/docs/roles-permissions/telemetry.
  telemetry_roles = [
    "roles/serviceusage.serviceUsageConsumer",
    "roles/telemetry.metricsWriter",
    "roles/telemetry.tracesWriter",
  ]

  labels = merge(var.labels, { service = var.name, managed-by = "terraform" })
}

resource "google_service_account" "this" {
  project      = var.project_id
  account_id   = var.service_account_id
  display_name = "Cloud Run service ${var.name}"
  description  = "Identity of the ${var.name} service: the ID tokens it sends to the services it calls."
}

# Project roles the service's own account needs to start (stats: its Cloud SQL instance), each
# limited by an IAM condition (google provider: google_project_iam_member's condition block,
# expression and title required; website/docs/r/google_project_iam.html.markdown). The
# service depends on them, so its first revision never starts without them.
resource "google_project_iam_member" "project_roles" {
  for_each = var.project_roles

  project = var.project_id
  role    = each.key
  member  = "serviceAccount:${google_service_account.this.email}"

  condition {
    title       = each.value.title
    expression  = each.value.expression
    description = "Granted by the grpc-service module to the ${var.name} service."
  }
}

# The Telemetry API's roles for the service's own account, on its project (the API takes no
# narrower resource to grant on). None when var.telemetry is off.
resource "google_project_iam_member" "telemetry_roles" {
  for_each = var.telemetry ? toset(local.telemetry_roles) : toset([])

  project = var.project_id
  role    = each.key
  member  = "serviceAccount:${google_service_account.this.email}"
}

resource "google_cloud_run_v2_service" "this" {
  project             = var.project_id
  location            = var.region
  name                = var.name
  ingress             = var.ingress
  labels              = local.labels
  deletion_protection = var.deletion_protection

  # Public the way Cloud Run recommends: the invoker IAM check turned off for this service
  # (google provider: google_cloud_run_v2_service.invoker_iam_disabled, the Run Admin API v2
  # field invokerIamDisabled, "Disables IAM permission check for run.routes.invoke for callers
  # of this service"; https://cloud.google.com/run/docs/authenticating/public), never an
  # allUsers binding. The container still checks every token that is sent (AUTH_MODE=optional).
  invoker_iam_disabled = var.public

  # Audiences besides the run.app URL that Cloud Run's edge accepts in an ID token (google
  # provider: google_cloud_run_v2_service.custom_audiences, "Specify each custom audience as
  # the full URL in a string", website/docs/r/cloud_run_v2_service.html.markdown;
  # https://cloud.google.com/run/docs/configuring/custom-audiences).
  # AUTH_AUDIENCES gets the same list, so the container accepts exactly what the edge does.
  custom_audiences = var.custom_audiences

  depends_on = [google_project_iam_member.project_roles, google_project_iam_member.telemetry_roles]

  lifecycle {
    precondition {
      condition     = !var.public || var.name == "gateway"
      error_message = "Only the gateway may be public: route and stats are internal services, and every call to them needs an ID token."
    }
    precondition {
      condition     = can(regex("@sha256:[0-9a-f]{64}$", var.image))
      error_message = "image must name its digest (<repository>/<service>@sha256:<64 hex digits>), not a tag: scripts/deploy.sh passes image_digests."
    }
    precondition {
      condition     = alltrue([for label in keys(var.invoker_methods) : contains(keys(var.invokers), label)])
      error_message = "invoker_methods names an invoker label that var.invokers does not have."
    }
  }

  template {
    service_account                  = google_service_account.this.email
    timeout                          = "${var.request_timeout_seconds}s"
    max_instance_request_concurrency = var.max_concurrency
    labels                           = local.labels

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    dynamic "vpc_access" {
      for_each = var.vpc_egress == null ? [] : [var.vpc_egress]
      content {
        egress = "ALL_TRAFFIC"
        network_interfaces {
          network    = vpc_access.value.network
          subnetwork = vpc_access.value.subnetwork
        }
      }
    }

    containers {
      image = var.image

      # Naming the port h2c makes Cloud Run speak HTTP/2 cleartext to the container: gRPC end to end.
      ports {
        name           = "h2c"
        container_port = var.container_port
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
        cpu_idle          = !var.cpu_always_allocated
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.container_env
        content {
          name  = env.key
          value = env.value
        }
      }

      # Startup waits until the service is ready under its own name: a revision whose service
      # cannot work (stats without its database) never takes traffic.
      startup_probe {
        # Up to 240 s (Cloud Run's limit): stats' first start waits for its database grants.
        initial_delay_seconds = 0
        period_seconds        = 4
        timeout_seconds       = 2
        failure_threshold     = 60
        grpc {
          port    = var.container_port
          service = var.health_service
        }
      }

      # Liveness asks for the whole server (""), which stays SERVING while the process can
      # answer: a service that is alive but waiting for a dependency (stats for its database)
      # says NOT_SERVING under its own name, and restarting it would not help.
      liveness_probe {
        period_seconds    = 10
        timeout_seconds   = 2
        failure_threshold = 3
        grpc {
          port    = var.container_port
          service = ""
        }
      }
    }
  }
}

resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = var.invokers

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.this.name
  role     = "roles/run.invoker"
  member   = each.value
}
