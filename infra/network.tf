# Internal ingress on route and stats: Cloud Run counts a call from another Cloud Run service as
# internal only when it leaves the caller through a VPC. So the callers (gateway, route) use
# Direct VPC egress with all traffic routed through this subnet, and the subnet has Private
# Google Access, through which *.run.app and Google APIs (token keys, metadata-free APIs) are
# reached. There is no Cloud NAT: the callers reach nothing else on the internet.

resource "google_compute_network" "services" {
  project                 = var.project_id
  name                    = "routeguide"
  auto_create_subnetworks = false

  depends_on = [google_project_service.apis]
}

resource "google_compute_subnetwork" "services" {
  project                  = var.project_id
  name                     = "routeguide-${var.region}"
  region                   = var.region
  network                  = google_compute_network.services.id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true
}
