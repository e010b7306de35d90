# Inputs of the golden-image infrastructure. Every path is absolute: the pipeline runs Terraform
# with -chdir and a data dir outside this directory, so relative paths would be ambiguous.

variable "registry_dir" {
  description = "Absolute path of the local image registry that Packer bakes into (<registry_dir>/<image>/manifest.json)."
  type        = string

  validation {
    condition     = can(regex("^/", var.registry_dir))
    error_message = "The registry_dir must be an absolute path."
  }
}

variable "environment" {
  description = "Deployment environment (dev, staging, production, ...); hosts get their target roots under <targets_root>/<environment>/."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_-]*$", var.environment))
    error_message = "The environment must be lower-case letters, digits, '-' or '_'."
  }
}

variable "targets_root" {
  description = "Absolute directory under which each host has its own target root: <targets_root>/<environment>/<host>."
  type        = string

  validation {
    condition     = can(regex("^/", var.targets_root))
    error_message = "The targets_root must be an absolute path."
  }
}

variable "host_count" {
  description = "Number of web hosts (web-1 .. web-N)."
  type        = number
  default     = 2

  validation {
    # (Not floor(x) == x: Terraform 1.0 compares a number given with -var by precision and says false.)
    condition     = can(regex("^[0-9]+$", tostring(var.host_count))) && var.host_count >= 1 && var.host_count <= 50
    error_message = "The host_count must be a whole number from 1 to 50."
  }
}

variable "fallback_image" {
  description = "Image id used when the registry holds no image (image_source = \"fallback\")."
  type        = string
  default     = "golden-fallback"
}

variable "pinned_image" {
  description = "When not empty, use exactly this image from the registry (rollback); it must exist there."
  type        = string
  default     = ""

  validation {
    condition     = var.pinned_image == "" || can(regex("^[A-Za-z0-9][A-Za-z0-9._-]*$", var.pinned_image))
    error_message = "The pinned_image must be an image name (letters, digits, '.', '_', '-') or empty."
  }
}
