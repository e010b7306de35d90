# Picks the golden image to deploy from a local image registry and describes the hosts that run it.
# No providers and no resources: only variables, locals and outputs, so that it plans and applies
# offline with Terraform 1.0 and later (and OpenTofu), and the state holds nothing but outputs.

terraform {
  required_version = ">= 1.0.0"

  # State goes wherever the caller says (-backend-config=path=...), never into this directory.
  backend "local" {}
}

locals {
  # Images are directories holding a manifest.json written by packer/scripts/bake.sh. Hidden
  # directories (a bake in progress) and unreadable manifests are ignored.
  manifest_files = sort([
    for f in fileset(var.registry_dir, "*/manifest.json") : f
    if !can(regex("^\\.", f))
  ])
  # name => {build_time, software}, normalised so that every image has the same type.
  images = {
    for f in local.manifest_files : dirname(f) => {
      build_time = try(tostring(jsondecode(file("${var.registry_dir}/${f}")).build_time), "")
      software = tomap({
        for k, v in try(jsondecode(file("${var.registry_dir}/${f}")).software, {}) : k => tostring(v)
      })
    }
    if can(jsondecode(file("${var.registry_dir}/${f}")))
  }

  # Oldest to newest: by the build time recorded in the manifest (ISO 8601 UTC, so lexical order is
  # time order), then by name (timestamped names sort by time too).
  image_order = [
    for key in sort([for name, m in local.images : "${m.build_time} ${name}"]) :
    element(split(" ", key), 1)
  ]
  newest_image = length(local.image_order) > 0 ? local.image_order[length(local.image_order) - 1] : ""

  image_source = var.pinned_image != "" ? "pinned" : (local.newest_image != "" ? "registry" : "fallback")
  image_id = (
    local.image_source == "pinned" ? var.pinned_image :
    local.image_source == "registry" ? local.newest_image :
    var.fallback_image
  )
  image_dir = "${var.registry_dir}/${local.image_id}"

  # A pinned image must exist in the registry: the plan fails naming the missing manifest.
  pinned_check = var.pinned_image != "" ? file("${local.image_dir}/manifest.json") : ""

  image = local.image_source == "fallback" ? { build_time = "", software = tomap({}) } : local.images[local.image_id]

  # The image deployed before the chosen one, for a rollback ("" when there is none).
  chosen_index   = index(concat(local.image_order, [local.image_id]), local.image_id)
  previous_image = local.image_source != "fallback" && local.chosen_index > 0 ? local.image_order[local.chosen_index - 1] : ""

  hosts = [
    for i in range(1, var.host_count + 1) : {
      name        = "web-${i}"
      target_root = "${var.targets_root}/${var.environment}/web-${i}"
    }
  ]

  ansible_inventory = {
    all = {
      children = {
        web = {
          hosts = {
            for h in local.hosts : h.name => {
              ansible_connection         = "local"
              ansible_python_interpreter = "/usr/bin/python3"
              target_root                = h.target_root
              image_id                   = local.image_id
              image_dir                  = local.image_dir
            }
          }
          vars = {
            # Not "environment": that name is reserved in Ansible (a play/task keyword).
            deploy_environment = var.environment
          }
        }
      }
    }
  }
}
