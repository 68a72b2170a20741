variable "subscription_id" {
  description = "Azure subscription to deploy into."
  type        = string
}

variable "prefix" {
  description = "Name prefix of every resource (lowercase letters and digits, 3-12 chars)."
  type        = string
  default     = "irisscorer"
  validation {
    condition     = can(regex("^[a-z][a-z0-9]{2,11}$", var.prefix))
    error_message = "prefix must be 3-12 lowercase letters or digits, starting with a letter."
  }
}

variable "location" {
  description = "Azure region."
  type        = string
  default     = "westeurope"
}

variable "kubernetes_version" {
  description = "AKS version (null = the region's default)."
  type        = string
  default     = null
}

variable "node_vm_size" {
  description = "VM size of the system/user node pool."
  type        = string
  default     = "Standard_D4ds_v5"
}

variable "node_count_min" {
  type    = number
  default = 2
}

variable "node_count_max" {
  type    = number
  default = 5
}

variable "eventhubs_throughput_units" {
  description = "Event Hubs Standard throughput units (1 TU = 1 MB/s or 1000 events/s in, 2 MB/s out)."
  type        = number
  default     = 2
}

variable "eventhubs_max_throughput_units" {
  description = "Auto-inflate ceiling."
  type        = number
  default     = 10
}

variable "partitions" {
  description = "Partitions per hub. The worker's KEDA maxReplicaCount must not exceed it."
  type        = number
  default     = 4
}

variable "consumer_group" {
  description = "Consumer group of the worker (IRIS_CONSUMER_GROUP)."
  type        = string
  default     = "iris-scorer"
}

variable "namespace" {
  description = "Kubernetes namespace of the workloads (deploy/k8s/base)."
  type        = string
  default     = "iris-scorer"
}

variable "postgres_sku" {
  type    = string
  default = "B_Standard_B1ms"
}

variable "tags" {
  type = map(string)
  default = {
    app = "iris-scorer"
  }
}
