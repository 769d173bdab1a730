#!/usr/bin/env bash
# Install the Debian packages a local node needs (agentid.devcluster.node), only those that are missing:
#   runc, the CNI plugins, iptables + conntrack (kube-proxy), nftables (teardown removes the tables the node made), mmdebstrap + umoci + skopeo (`make image`),
#   busybox-static (the node tests' workload image).
# Called by `make node-prereqs` (which `make test` depends on). Without root nothing is installed: the node tests
# then skip and say why.
set -euo pipefail

# command -> package
declare -A wanted=(
  [runc]=runc
  [/usr/lib/cni/bridge]=containernetworking-plugins
  [iptables]=iptables
  [conntrack]=conntrack
  [nft]=nftables
  [mmdebstrap]=mmdebstrap
  [umoci]=umoci
  [skopeo]=skopeo
  [/bin/busybox]=busybox-static
)

missing=()
for probe in "${!wanted[@]}"; do
  if [[ "${probe}" == /* ]]; then [[ -x "${probe}" ]] && continue
  else command -v "${probe}" >/dev/null 2>&1 && continue
  fi
  missing+=("${wanted[${probe}]}")
done
# busybox (dynamic) may provide /bin/busybox; the test image needs the static one.
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
  missing+=(busybox-static)
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u | sed '/^$/d')

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "[node-prereqs] all present" >&2
  exit 0
fi
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "[node-prereqs] missing ${missing[*]} and cannot install them (needs root and apt-get): node tests will skip" >&2
  exit 0
fi
echo "[node-prereqs] installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
