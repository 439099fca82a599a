#!/usr/bin/env bash
# System packages the mammolens tests need (service tests: PostgreSQL server, Orthanc PACS
# with its DICOMweb plugin, Chromium for the browser test, the DICOM validators dciodvfy
# (dicom3tools) and dsrdump (dcmtk) for the conformance tests). Idempotent: installs only what
# is missing. Needs root (or passwordless sudo) when something must be installed.
#   scripts/system-deps.sh          install what is missing
#   scripts/system-deps.sh --check  list what is missing; exit 1 if anything is
set -euo pipefail

PACKAGES=(postgresql orthanc orthanc-dicomweb chromium dicom3tools dcmtk)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "system-deps: all present (${PACKAGES[*]})"
  exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
  echo "system-deps: missing: ${missing[*]}"
  exit 1
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "system-deps: missing ${missing[*]}; run as root: apt-get install ${missing[*]}" >&2
    # without them the service/browser tests skip, unless a run requires them (CI)
    case "${MAMMOLENS_REQUIRE_SERVICES:-}" in ""|0|false) exit 0 ;; *) exit 1 ;; esac
  fi
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# (the packages' own services are not used: the tests start private instances)
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q "${missing[@]}"
