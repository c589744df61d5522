# stats keeps its aggregates in Cloud SQL for PostgreSQL, reached through the Cloud SQL
# connector (mTLS to the instance, authorised by IAM) and logged in with IAM database
# authentication as stats' own service account: there is no password anywhere.

resource "google_sql_database_instance" "stats" {
  project             = var.project_id
  name                = var.stats_database_instance
  region              = var.region
  database_version    = "POSTGRES_15"
  deletion_protection = var.deletion_protection

  settings {
    edition           = "ENTERPRISE"
    tier              = var.stats_database_tier
    availability_type = var.stats_database_availability
    user_labels       = local.common_labels

    database_flags {
      name  = "cloudsql.iam_authentication"
      value = "on"
    }

    # A public address with no authorised networks: only the connector (IAM + mTLS) gets in.
    ip_configuration {
      ipv4_enabled = true
      ssl_mode     = "ENCRYPTED_ONLY"
    }

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_sql_database" "stats" {
  project         = var.project_id
  instance        = google_sql_database_instance.stats.name
  name            = "stats"
  deletion_policy = "ABANDON"
}

# The database user of stats' service account (Cloud SQL names it by the email without
# ".gserviceaccount.com").
resource "google_sql_user" "stats" {
  project  = var.project_id
  instance = google_sql_database_instance.stats.name
  name     = trimsuffix(module.stats.service_account_email, ".gserviceaccount.com")
  type     = "CLOUD_IAM_SERVICE_ACCOUNT"
  # The user owns stats' tables: PostgreSQL refuses to drop it, so destroy leaves it to the
  # instance (deleted with it).
  deletion_policy = "ABANDON"
}

# stats' roles on this instance (roles/cloudsql.client, roles/cloudsql.instanceUser) are granted
# by its module (project_roles in main.tf), conditioned on this instance, before the service.
