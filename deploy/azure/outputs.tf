# Wiring to deploy/k8s/overlays/aks (see deploy/README.md):
#   terraform output -raw iris_settings_env > ../k8s/overlays/aks/azure.env
#   terraform output -raw mlflow_env        > ../k8s/overlays/aks/mlflow-azure.env
# Secrets (connection strings, the PostgreSQL password) are sensitive outputs that go straight
# into `kubectl create secret`, never into a file in the repository.

output "resource_group" {
  value = azurerm_resource_group.main.name
}

output "aks_name" {
  value = azurerm_kubernetes_cluster.main.name
}

output "acr_login_server" {
  value = azurerm_container_registry.main.login_server
}

output "eventhubs_bootstrap_servers" {
  value = "${azurerm_eventhub_namespace.main.name}.servicebus.windows.net:9093"
}

output "iris_settings_env" {
  description = "IRIS_* settings merged into the iris-settings ConfigMap by the aks overlay."
  value       = <<-EOT
    IRIS_KAFKA_BOOTSTRAP_SERVERS=${azurerm_eventhub_namespace.main.name}.servicebus.windows.net:9093
    IRIS_KAFKA_SECURITY_PROTOCOL=SASL_SSL
    IRIS_KAFKA_SASL_MECHANISM=PLAIN
    IRIS_KAFKA_SASL_USERNAME=$ConnectionString
    IRIS_CONSUMER_GROUP=${var.consumer_group}
    IRIS_REQUESTS_TOPIC=iris.requests
    MLFLOW_TRACKING_URI=http://mlflow:5000
  EOT
}

output "mlflow_env" {
  description = "Non-secret MLflow server settings (mlflow-azure ConfigMap of the aks overlay)."
  value       = <<-EOT
    MLFLOW_DB_HOST=${azurerm_postgresql_flexible_server.mlflow.fqdn}
    MLFLOW_DB_USER=${azurerm_postgresql_flexible_server.mlflow.administrator_login}
    MLFLOW_DB_NAME=${azurerm_postgresql_flexible_server_database.mlflow.name}
    MLFLOW_ARTIFACTS_URI=wasbs://${azurerm_storage_container.mlflow.name}@${azurerm_storage_account.main.name}.blob.core.windows.net/artifacts
    AZURE_CLIENT_ID=${azurerm_user_assigned_identity.mlflow.client_id}
  EOT
}

output "dvc_remote_url" {
  description = "dvc remote add -d azure <this>; dvc remote modify azure account_name <storage account>"
  value       = "azure://${azurerm_storage_container.dvc.name}/iris-scorer"
}

output "storage_account_name" {
  value = azurerm_storage_account.main.name
}

output "grafana_endpoint" {
  value = azurerm_dashboard_grafana.main.endpoint
}

output "eventhubs_app_connection_string" {
  description = "Worker/backfill SASL password (iris-secrets/kafka-sasl-password)."
  value       = azurerm_eventhub_namespace_authorization_rule.app.primary_connection_string
  sensitive   = true
}

output "eventhubs_keda_connection_string" {
  description = "KEDA's SASL password (iris-keda-eventhubs/password)."
  value       = azurerm_eventhub_namespace_authorization_rule.keda.primary_connection_string
  sensitive   = true
}

output "postgres_password" {
  value     = random_password.postgres.result
  sensitive = true
}
