output "name" {
  description = "Cloud Run service name."
  value       = google_cloud_run_v2_service.this.name
}

output "url" {
  description = "The service's deterministic URL: what callers dial and the audience of their ID tokens."
  value       = local.url
  # Known before the service exists; callers should not be deployed against it until it does.
  depends_on = [google_cloud_run_v2_service.this]
}

output "service_account_email" {
  description = "Email of the service's own service account."
  value       = google_service_account.this.email
}

output "service_account_member" {
  description = "The service account as an IAM member, for invoker bindings on the services it calls."
  value       = "serviceAccount:${google_service_account.this.email}"
}
