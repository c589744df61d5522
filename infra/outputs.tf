output "gateway_url" {
  description = "The gateway's URL: what clients dial and the audience of their ID tokens."
  value       = module.gateway.url
}

output "route_url" {
  description = "route's URL (internal ingress: reachable only from the project's VPC)."
  value       = module.route.url
}

output "stats_url" {
  description = "stats' URL (internal ingress: reachable only from the project's VPC)."
  value       = module.stats.url
}

output "service_account_emails" {
  description = "Each service's own service account."
  value = {
    gateway = module.gateway.service_account_email
    route   = module.route.service_account_email
    stats   = module.stats.service_account_email
  }
}

output "client_service_account_email" {
  description = "The identity to impersonate when calling the gateway (smoke call, deployed test suite)."
  value       = google_service_account.client.email
}

output "image_repository" {
  description = "Where scripts/deploy.sh pushes the images."
  value       = local.image_base
}

output "builder_service_account" {
  description = "The account Cloud Build runs as (gcloud builds submit --service-account)."
  value       = google_service_account.builder.id
}

output "stats_database" {
  description = "The Cloud SQL instance and database of stats, and its IAM database user (for the one-time grant, see README)."
  value = {
    instance_connection_name = google_sql_database_instance.stats.connection_name
    database                 = google_sql_database.stats.name
    iam_user                 = google_sql_user.stats.name
  }
}

output "build_source_bucket" {
  description = "Where scripts/deploy.sh stages the source for Cloud Build."
  value       = google_storage_bucket.build_source.name
}
