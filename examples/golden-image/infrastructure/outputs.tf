# Outputs are the interface to the pipeline: `terraform output -json` becomes the stage's outputs.

output "image_id" {
  description = "The image to deploy: a registry image name, the pinned one, or the fallback."
  value       = local.image_id
}

output "image_source" {
  description = "Where image_id came from: \"registry\" (newest image), \"pinned\" (pinned_image) or \"fallback\" (registry empty)."
  value       = local.image_source
}

output "image_dir" {
  description = "Absolute path of the image directory (manifest.json, rootfs/); may not exist for the fallback."
  value       = local.image_dir
}

output "image_software" {
  description = "Software versions from the image's manifest.json; empty for the fallback."
  value       = local.image.software
}

output "image_build_time" {
  description = "Build time recorded in the image's manifest.json (ISO 8601 UTC); empty for the fallback."
  value       = local.image.build_time
}

output "previous_image_id" {
  description = "The registry image built just before image_id (what a rollback would pin); empty when none."
  value       = local.previous_image
}

output "available_images" {
  description = "All images in the registry, oldest first."
  value       = local.image_order
}

output "hosts" {
  description = "The web hosts, each with its own target root."
  value       = local.hosts
}

output "ansible_inventory" {
  description = "Ansible inventory (YAML) for the hosts: group web, local connection, per-host target_root, image_id and image_dir."
  value       = yamlencode(local.ansible_inventory)
}
