#!/bin/sh
# Bakes a golden "image" into a local image registry directory (run by Packer's shell-local
# provisioner, see ../golden-image.pkr.json; runnable by hand with the same variables):
#
#   $REGISTRY_DIR/$IMAGE_NAME/manifest.json   image name, build time, base, software versions
#   $REGISTRY_DIR/$IMAGE_NAME/rootfs/...      files that post-deploy.yml copies into each host
#
# The image is assembled in a hidden temporary directory and moved into place at the end, so the
# registry never shows a half-built image (Terraform lists "*/manifest.json"). Rebuilding an
# existing name replaces it. Versions are measured on this machine with `--version`; the
# healthcheck's must equal the declared HEALTHCHECK_VERSION.
set -eu
PATH=${PATH:-/usr/local/bin:/usr/bin:/bin}

die() { echo "bake: error: $*" >&2; exit 1; }

: "${IMAGE_NAME:?IMAGE_NAME is required}" "${REGISTRY_DIR:?REGISTRY_DIR is required}"
: "${FILES_DIR:?FILES_DIR is required}"
BASE_VERSION=${BASE_VERSION:-debian-12}
HEALTHCHECK_VERSION=${HEALTHCHECK_VERSION:-1.0.0}

case "$IMAGE_NAME" in
    ''|.*|*[!A-Za-z0-9._-]*) die "image_name '$IMAGE_NAME' must be letters, digits, '.', '_' or '-' and not start with '.'" ;;
esac
case "$REGISTRY_DIR" in
    /*) ;;
    *) die "registry_dir '$REGISTRY_DIR' must be an absolute path" ;;
esac
[ -d "$FILES_DIR/rootfs" ] || die "no $FILES_DIR/rootfs to bake from"

# First version-looking word of a command's --version output, or "unknown".
version_of() {
    command -v "$1" >/dev/null 2>&1 || { echo unknown; return; }
    v=$("$@" 2>&1 | head -n 1 | grep -oE '[0-9]+(\.[0-9]+)+[0-9A-Za-z.+~-]*' | head -n 1) || true
    echo "${v:-unknown}"
}

build_time=$(date -u +%Y-%m-%dT%H:%M:%SZ)
v_bash=$(version_of bash --version)
v_coreutils=$(version_of ls --version)
v_python3=$(version_of python3 --version)
v_sed=$(version_of sed --version)
v_tar=$(version_of tar --version)

mkdir -p "$REGISTRY_DIR"
image_dir="$REGISTRY_DIR/$IMAGE_NAME"
tmp="$REGISTRY_DIR/.bake-$IMAGE_NAME.$$"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp"
mkdir -p "$tmp"
cp -R "$FILES_DIR/rootfs" "$tmp/rootfs"

sed -e "s/@IMAGE_ID@/$IMAGE_NAME/g" -e "s/@BASE@/$BASE_VERSION/g" "$FILES_DIR/rootfs/etc/motd" > "$tmp/rootfs/etc/motd"
mkdir -p "$tmp/rootfs/etc/capstan"
cat > "$tmp/rootfs/etc/capstan/image-release" <<RELEASE
IMAGE_ID=$IMAGE_NAME
BASE=$BASE_VERSION
BUILD_TIME=$build_time
RELEASE

# The declared tool version must be what the baked file says it is.
v_healthcheck=$(version_of sh "$tmp/rootfs/usr/local/bin/healthcheck" --version)
[ "$v_healthcheck" = "$HEALTHCHECK_VERSION" ] ||
    die "healthcheck_version is $HEALTHCHECK_VERSION but the baked healthcheck says $v_healthcheck"

files=$(cd "$tmp/rootfs" && find . -type f | sed 's|^\./||' | LC_ALL=C sort | sed -e 's/.*/    "&"/' -e '$!s/$/,/')
cat > "$tmp/manifest.json" <<JSON
{
  "schema": 1,
  "image": "$IMAGE_NAME",
  "build_time": "$build_time",
  "base": "$BASE_VERSION",
  "builder": "packer null + shell-local",
  "software": {
    "bash": "$v_bash",
    "coreutils": "$v_coreutils",
    "healthcheck": "$v_healthcheck",
    "python3": "$v_python3",
    "sed": "$v_sed",
    "tar": "$v_tar"
  },
  "rootfs_files": [
$files
  ]
}
JSON

rm -rf "$image_dir"
mv "$tmp" "$image_dir"
trap - EXIT
echo "baked $IMAGE_NAME into $image_dir"
# One machine-parsable line (it shows up in `packer build -machine-readable` as a ui message):
# the measured versions as space-separated name=version pairs (no commas: Packer's machine-readable
# output escapes them as %!(PACKER_COMMA)). Packer renders the manifest post-processor's
# custom_data before the build runs, so measured values cannot go there.
echo "capstan-software: bash=$v_bash coreutils=$v_coreutils healthcheck=$v_healthcheck python3=$v_python3 sed=$v_sed tar=$v_tar"
