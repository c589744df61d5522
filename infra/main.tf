# The three services of infra/topology.json on Cloud Run, each with its own service account.
# Who may call whom is written out per module below and must equal the topology:
# test/infra.test.ts parses this file and fails when the two differ.

locals {
  topology = jsondecode(file("${path.module}/topology.json")).services

  image_base = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"

  # Each service runs its image by digest (<repository>/<service>@sha256:…), never by tag
  # (Cloud Run deploys "an image by tag or digest", and resolves a tag to a digest once, at
  # deploy time: https://cloud.google.com/artifact-registry/docs/integrate-cloud-run). A new
  # digest changes the configuration, so it is a new revision; a tag that moved would not be.
  # scripts/deploy.sh passes the digests; without one the module's precondition refuses the plan.
  images = {
    for name in keys(local.topology) : name => "${local.image_base}/${name}@${lookup(var.image_digests, name, "")}"
  }

  # Callers of internal-ingress services send everything through the VPC: only then do their
  # calls count as internal (see network.tf).
  vpc_egress = {
    network    = google_compute_network.services.id
    subnetwork = google_compute_subnetwork.services.id
  }

  common_labels = { app = "routeguide" }
}

resource "google_project_service" "apis" {
  for_each = toset([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "compute.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "run.googleapis.com",
    "sqladmin.googleapis.com",
    # The services' spans and metrics: the Telemetry (OTLP) API takes them, and keeps spans
    # only while the Cloud Trace API is on (https://docs.cloud.google.com/stackdriver/docs/reference/telemetry/v1.traces).
    "cloudtrace.googleapis.com",
    "monitoring.googleapis.com",
    "telemetry.googleapis.com",
  ])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

resource "google_artifact_registry_repository" "images" {
  project       = var.project_id
  location      = var.region
  repository_id = var.repository_id
  format        = "DOCKER"
  description   = "Images of the routeguide services"
  labels        = local.common_labels

  # A tag names one image forever: pushing an existing tag again fails (google provider:
  # google_artifact_registry_repository docker_config.immutable_tags, "prevents all tags from
  # being modified, moved or deleted. This does not prevent tags from being created";
  # website/docs/r/artifact_registry_repository.html.markdown). scripts/deploy.sh gives every
  # build of uncommitted changes a tag of its own.
  docker_config {
    immutable_tags = true
  }

  depends_on = [google_project_service.apis]
}

# An identity for people and CI to call the gateway as, by impersonation (no keys):
# the smoke call of scripts/deploy.sh and the deployed test suite use it.
resource "google_service_account" "client" {
  project      = var.project_id
  account_id   = "routeguide-client"
  display_name = "routeguide client"
  description  = "Calls the gateway: smoke tests and the deployed integration suite mint ID tokens as it."

  depends_on = [google_project_service.apis]
}

resource "google_service_account_iam_member" "client_token_creators" {
  for_each = toset(var.client_token_creators)

  service_account_id = google_service_account.client.name
  role               = "roles/iam.serviceAccountOpenIdTokenCreator"
  member             = each.value
}

module "stats" {
  source = "./modules/grpc-service"

  project_id          = var.project_id
  region              = var.region
  name                = "stats"
  service_account_id  = local.topology.stats.service_account_id
  image               = local.images.stats
  health_service      = "stats.v1.StatsService"
  ingress             = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  labels              = local.common_labels
  deletion_protection = var.deletion_protection
  max_instances       = var.max_instances

  # The Cloud SQL connector refreshes its certificate in the background, between requests too.
  cpu_always_allocated = true

  env = {
    LOG_LEVEL               = var.log_level
    STATS_DATABASE_URL      = "cloudsql://${google_sql_database_instance.stats.connection_name}/${google_sql_database.stats.name}"
    STATS_DATABASE_IAM_USER = google_sql_user.stats.name
    # Each instance holds this many connections plus one for LISTEN: keep
    # max_instances × (pool + 1) under the instance's max_connections.
    STATS_DATABASE_POOL_MAX = tostring(var.stats_database_pool_max)
  }
  # Only the gateway may name a call's end user (x-end-user), here and in route.
  end_user_from = [module.gateway.service_account_email]

  # The Cloud SQL connector (cloudsql.instances.connect, in roles/cloudsql.client) and IAM
  # database login (cloudsql.instances.login, in roles/cloudsql.instanceUser), on stats' own
  # instance only: Cloud SQL supports IAM Conditions on an instance's resource.name and
  # resource.type ("Allow users to connect to specific instances",
  # https://cloud.google.com/sql/docs/postgres/iam-conditions). The module grants them before
  # it creates the service, whose startup probe waits for the database.
  project_roles = {
    for role in ["roles/cloudsql.client", "roles/cloudsql.instanceUser"] : role => {
      title      = "stats database instance only"
      expression = "resource.type == \"sqladmin.googleapis.com/Instance\" && resource.name == \"projects/${var.project_id}/instances/${google_sql_database_instance.stats.name}\""
    }
  }

  invokers = {
    gateway = module.gateway.service_account_member
    route   = module.route.service_account_member
  }
  # What each may call (the gateway reads, route writes): checked in the container, since
  # roles/run.invoker grants a whole service.
  invoker_methods = local.topology.stats.invoked_by

  depends_on = [google_project_service.apis]
}

module "route" {
  source = "./modules/grpc-service"

  project_id          = var.project_id
  region              = var.region
  name                = "route"
  service_account_id  = local.topology.route.service_account_id
  image               = local.images.route
  health_service      = "routeguide.v1.RouteGuideService"
  ingress             = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  max_instances       = var.max_instances
  labels              = local.common_labels
  deletion_protection = var.deletion_protection
  env                 = { LOG_LEVEL = var.log_level }
  end_user_from       = [module.gateway.service_account_email]
  vpc_egress          = local.vpc_egress
  # route sends its reports to stats off the request path: it needs CPU between requests.
  cpu_always_allocated = true

  peers = {
    STATS_URL = module.stats.url
  }

  invokers = {
    gateway = module.gateway.service_account_member
  }
  invoker_methods = local.topology.route.invoked_by

  depends_on = [google_project_service.apis]
}

module "gateway" {
  source = "./modules/grpc-service"

  project_id          = var.project_id
  region              = var.region
  name                = "gateway"
  service_account_id  = local.topology.gateway.service_account_id
  image               = local.images.gateway
  health_service      = "gateway.v1.GatewayService"
  ingress             = "INGRESS_TRAFFIC_ALL"
  min_instances       = var.gateway_min_instances
  max_instances       = var.max_instances
  labels              = local.common_labels
  deletion_protection = var.deletion_protection
  env                 = { LOG_LEVEL = var.log_level }
  vpc_egress          = local.vpc_egress

  peers = {
    ROUTE_URL = module.route.url
    STATS_URL = module.stats.url
  }

  # A custom domain in front of the gateway: callers mint tokens for it, so Cloud Run's edge
  # and the container both accept it (the module feeds custom_audiences and AUTH_AUDIENCES).
  custom_audiences = var.gateway_custom_audiences

  # Off by default. On: anyone may call the gateway without a token (served as the anonymous
  # caller); route and stats are never public (the module refuses it).
  public = var.gateway_public

  # The gateway is the entry point: only identities from outside the topology call it.
  invokers = merge(
    { for member in toset(concat(local.topology.gateway.external_invokers, var.gateway_invokers)) : member => member },
    { client = "serviceAccount:${google_service_account.client.email}" },
  )

  depends_on = [google_project_service.apis]
}

# Cloud Build runs as this account (not a default one): it may read the uploaded source, push to
# the repository and write build logs, nothing else.
resource "google_service_account" "builder" {
  project      = var.project_id
  account_id   = "routeguide-builder"
  display_name = "routeguide image builder"
  description  = "Builds and pushes the service images (scripts/deploy.sh, infra/cloudbuild.yaml)."

  depends_on = [google_project_service.apis]
}

resource "google_artifact_registry_repository_iam_member" "builder_writes_images" {
  project    = var.project_id
  location   = var.region
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.builder.email}"
}

resource "google_project_iam_member" "builder_writes_logs" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.builder.email}"
}

# Where gcloud builds submit uploads the source (scripts/deploy.sh passes it as the staging
# dir): a bucket of its own, so the builder reads sources and nothing else in the project.
resource "google_storage_bucket" "build_source" {
  project                     = var.project_id
  name                        = "${var.project_id}-routeguide-build-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true
  labels                      = local.common_labels

  lifecycle_rule {
    condition {
      age = 7
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "builder_reads_source" {
  bucket = google_storage_bucket.build_source.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.builder.email}"
}
