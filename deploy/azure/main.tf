# iris-scorer on Azure: AKS (KEDA add-on, OIDC issuer + workload identity, managed Prometheus),
# ACR, Event Hubs (Kafka endpoint), Blob Storage (MLflow artifacts, DVC remote), PostgreSQL
# flexible server (MLflow backend store), Azure Monitor workspace + Managed Grafana.

locals {
  # Event Hubs Standard allows at most 10 hubs per namespace; we use 8.
  hubs = {
    "iris.requests"     = { partitions = var.partitions, retention_days = 7 }
    "iris.predictions"  = { partitions = var.partitions, retention_days = 7 }
    "iris.requests.dlq" = { partitions = var.partitions, retention_days = 7 }
    "iris.drift"        = { partitions = var.partitions, retention_days = 7 }
    "iris.shadow"       = { partitions = var.partitions, retention_days = 7 }
    "iris.feedback"     = { partitions = var.partitions, retention_days = 7 }
    "iris.feedback.dlq" = { partitions = var.partitions, retention_days = 7 }
    "iris.performance"  = { partitions = var.partitions, retention_days = 7 }
  }
}

data "azurerm_client_config" "current" {}

resource "azurerm_resource_group" "main" {
  name     = "${var.prefix}-rg"
  location = var.location
  tags     = var.tags
}

# ---------------------------------------------------------------- registry and cluster

resource "azurerm_container_registry" "main" {
  name                          = "${var.prefix}acr"
  resource_group_name           = azurerm_resource_group.main.name
  location                      = azurerm_resource_group.main.location
  sku                           = "Standard"
  admin_enabled                 = false
  public_network_access_enabled = true
  tags                          = var.tags
}

resource "azurerm_kubernetes_cluster" "main" {
  name                      = "${var.prefix}-aks"
  resource_group_name       = azurerm_resource_group.main.name
  location                  = azurerm_resource_group.main.location
  dns_prefix                = var.prefix
  kubernetes_version        = var.kubernetes_version
  oidc_issuer_enabled       = true
  workload_identity_enabled = true
  azure_policy_enabled      = true
  local_account_disabled    = true
  sku_tier                  = "Standard"
  automatic_upgrade_channel = "patch"

  azure_active_directory_role_based_access_control {
    azure_rbac_enabled = true
    tenant_id          = data.azurerm_client_config.current.tenant_id
  }

  oms_agent {
    log_analytics_workspace_id      = azurerm_log_analytics_workspace.main.id
    msi_auth_for_monitoring_enabled = true
  }

  default_node_pool {
    name                         = "system"
    vm_size                      = var.node_vm_size
    auto_scaling_enabled         = true
    min_count                    = 1
    max_count                    = 3
    max_pods                     = 110
    os_disk_type                 = "Ephemeral"
    only_critical_addons_enabled = true
    upgrade_settings {
      max_surge = "33%"
    }
  }

  identity {
    type = "SystemAssigned"
  }

  network_profile {
    network_plugin      = "azure"
    network_plugin_mode = "overlay"
    network_policy      = "cilium"
    network_data_plane  = "cilium"
  }

  # KEDA add-on: ScaledObject/TriggerAuthentication CRDs and the operator, managed by AKS.
  workload_autoscaler_profile {
    keda_enabled = true
  }

  # Managed Prometheus (ama-metrics): scrapes PodMonitors of azmonitoring.coreos.com/v1.
  monitor_metrics {}

  tags = var.tags
}

# Workloads (REST, worker, MLflow, backfill) run here; the system pool keeps only critical add-ons.
resource "azurerm_kubernetes_cluster_node_pool" "work" {
  name                  = "work"
  kubernetes_cluster_id = azurerm_kubernetes_cluster.main.id
  vm_size               = var.node_vm_size
  auto_scaling_enabled  = true
  min_count             = var.node_count_min
  max_count             = var.node_count_max
  max_pods              = 110
  os_disk_type          = "Ephemeral"
  tags                  = var.tags
}

resource "azurerm_log_analytics_workspace" "main" {
  name                = "${var.prefix}-logs"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  sku                 = "PerGB2018"
  retention_in_days   = 30
  tags                = var.tags
}

resource "azurerm_role_assignment" "aks_acr_pull" {
  scope                            = azurerm_container_registry.main.id
  role_definition_name             = "AcrPull"
  principal_id                     = azurerm_kubernetes_cluster.main.kubelet_identity[0].object_id
  skip_service_principal_aad_check = true
}

# ---------------------------------------------------------------- Event Hubs (Kafka endpoint)

resource "azurerm_eventhub_namespace" "main" {
  name                          = "${var.prefix}-ehns"
  resource_group_name           = azurerm_resource_group.main.name
  location                      = azurerm_resource_group.main.location
  sku                           = "Standard" # Kafka endpoint (port 9093) is enabled on Standard and above
  capacity                      = var.eventhubs_throughput_units
  auto_inflate_enabled          = true
  maximum_throughput_units      = var.eventhubs_max_throughput_units
  minimum_tls_version           = "1.2"
  local_authentication_enabled  = true # SASL PLAIN with a connection string (Kafka clients, KEDA)
  public_network_access_enabled = true
  tags                          = var.tags
}

resource "azurerm_eventhub" "hubs" {
  for_each          = local.hubs
  name              = each.key
  namespace_id      = azurerm_eventhub_namespace.main.id
  partition_count   = each.value.partitions
  message_retention = each.value.retention_days
}

# Kafka clients create their consumer groups on first use; declaring it documents the name and
# makes it visible to Event Hubs tooling.
resource "azurerm_eventhub_consumer_group" "worker" {
  name                = var.consumer_group
  namespace_name      = azurerm_eventhub_namespace.main.name
  eventhub_name       = azurerm_eventhub.hubs["iris.requests"].name
  resource_group_name = azurerm_resource_group.main.name
}

# The app (worker, backfill) sends and listens; KEDA only reads offsets: two keys, rotated apart.
resource "azurerm_eventhub_namespace_authorization_rule" "app" {
  name                = "iris-scorer-app"
  namespace_name      = azurerm_eventhub_namespace.main.name
  resource_group_name = azurerm_resource_group.main.name
  listen              = true
  send                = true
  manage              = false
}

resource "azurerm_eventhub_namespace_authorization_rule" "keda" {
  name                = "keda-listen"
  namespace_name      = azurerm_eventhub_namespace.main.name
  resource_group_name = azurerm_resource_group.main.name
  listen              = true
  send                = false
  manage              = false
}

# ---------------------------------------------------------------- storage: MLflow artifacts, DVC remote

resource "azurerm_storage_account" "main" {
  name                            = "${var.prefix}store"
  resource_group_name             = azurerm_resource_group.main.name
  location                        = azurerm_resource_group.main.location
  account_tier                    = "Standard"
  account_replication_type        = "ZRS"
  min_tls_version                 = "TLS1_2"
  allow_nested_items_to_be_public = false
  shared_access_key_enabled       = false # Entra ID only: workload identity for MLflow, az login for DVC
  https_traffic_only_enabled      = true
  blob_properties {
    versioning_enabled = true
    delete_retention_policy {
      days = 14
    }
  }
  tags = var.tags
}

resource "azurerm_storage_container" "mlflow" {
  name                  = "mlflow"
  storage_account_id    = azurerm_storage_account.main.id
  container_access_type = "private"
}

resource "azurerm_storage_container" "dvc" {
  name                  = "dvc"
  storage_account_id    = azurerm_storage_account.main.id
  container_access_type = "private"
}

# ---------------------------------------------------------------- MLflow backend store

resource "random_password" "postgres" {
  length  = 32
  special = false # goes into a postgresql:// URI unescaped
}

resource "azurerm_postgresql_flexible_server" "mlflow" {
  name                          = "${var.prefix}-mlflow-pg"
  resource_group_name           = azurerm_resource_group.main.name
  location                      = azurerm_resource_group.main.location
  version                       = "16"
  sku_name                      = var.postgres_sku
  storage_mb                    = 32768
  backup_retention_days         = 14
  geo_redundant_backup_enabled  = true
  administrator_login           = "mlflow"
  administrator_password        = random_password.postgres.result
  public_network_access_enabled = true
  zone                          = "1"
  tags                          = var.tags
}

resource "azurerm_postgresql_flexible_server_database" "mlflow" {
  name      = "mlflow"
  server_id = azurerm_postgresql_flexible_server.mlflow.id
  charset   = "UTF8"
  collation = "en_US.utf8"
}

# Azure-internal sources only (AKS egress). Prefer VNet integration for production.
resource "azurerm_postgresql_flexible_server_firewall_rule" "azure" {
  name             = "allow-azure-services"
  server_id        = azurerm_postgresql_flexible_server.mlflow.id
  start_ip_address = "0.0.0.0"
  end_ip_address   = "0.0.0.0"
}

# ---------------------------------------------------------------- workload identity for MLflow → Blob

resource "azurerm_user_assigned_identity" "mlflow" {
  name                = "${var.prefix}-mlflow-id"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  tags                = var.tags
}

resource "azurerm_federated_identity_credential" "mlflow" {
  name                = "mlflow-sa"
  resource_group_name = azurerm_resource_group.main.name
  parent_id           = azurerm_user_assigned_identity.mlflow.id
  audience            = ["api://AzureADTokenExchange"]
  issuer              = azurerm_kubernetes_cluster.main.oidc_issuer_url
  subject             = "system:serviceaccount:${var.namespace}:mlflow"
}

resource "azurerm_role_assignment" "mlflow_blob" {
  scope                = azurerm_storage_account.main.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.mlflow.principal_id
}

# ---------------------------------------------------------------- managed Prometheus + Grafana

resource "azurerm_monitor_workspace" "main" {
  name                = "${var.prefix}-amw"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  tags                = var.tags
}

resource "azurerm_monitor_data_collection_endpoint" "prometheus" {
  name                = "${var.prefix}-prom-dce"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  kind                = "Linux"
}

resource "azurerm_monitor_data_collection_rule" "prometheus" {
  name                        = "${var.prefix}-prom-dcr"
  resource_group_name         = azurerm_resource_group.main.name
  location                    = azurerm_resource_group.main.location
  data_collection_endpoint_id = azurerm_monitor_data_collection_endpoint.prometheus.id
  kind                        = "Linux"

  destinations {
    monitor_account {
      monitor_account_id = azurerm_monitor_workspace.main.id
      name               = "MonitoringAccount"
    }
  }

  data_flow {
    streams      = ["Microsoft-PrometheusMetrics"]
    destinations = ["MonitoringAccount"]
  }

  data_sources {
    prometheus_forwarder {
      streams = ["Microsoft-PrometheusMetrics"]
      name    = "PrometheusDataSource"
    }
  }
}

resource "azurerm_monitor_data_collection_rule_association" "prometheus" {
  name                    = "${var.prefix}-prom-dcra"
  target_resource_id      = azurerm_kubernetes_cluster.main.id
  data_collection_rule_id = azurerm_monitor_data_collection_rule.prometheus.id
}

resource "azurerm_dashboard_grafana" "main" {
  name                  = "${var.prefix}-grafana"
  resource_group_name   = azurerm_resource_group.main.name
  location              = azurerm_resource_group.main.location
  grafana_major_version = "11"

  identity {
    type = "SystemAssigned"
  }

  azure_monitor_workspace_integrations {
    resource_id = azurerm_monitor_workspace.main.id
  }

  tags = var.tags
}

resource "azurerm_role_assignment" "grafana_reads_metrics" {
  scope                = azurerm_monitor_workspace.main.id
  role_definition_name = "Monitoring Data Reader"
  principal_id         = azurerm_dashboard_grafana.main.identity[0].principal_id
}
