#!/usr/bin/env bash
# Vendor the dashboard's one JS dependency from the npm registry into the package, so the page needs no CDN at run
# time and CI needs no npm: `npm pack` the pinned version in a temp dir, copy its standalone ES-module production
# build and licence, and record version, tarball integrity and the file's sha256 in a manifest. Re-run to upgrade
# (change LWC_VERSION) and commit the result.
set -euo pipefail
LWC_VERSION="${LWC_VERSION:-5.2.1}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/spymaster_assets/live/static/vendor"
FILE="lightweight-charts.standalone.production.mjs"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

command -v npm >/dev/null || { echo "vendor_js: npm is needed to vendor lightweight-charts" >&2; exit 1; }
(cd "$WORK" && npm pack --silent "lightweight-charts@$LWC_VERSION" >/dev/null)
TARBALL="$WORK/lightweight-charts-$LWC_VERSION.tgz"
INTEGRITY="$(npm view "lightweight-charts@$LWC_VERSION" dist.integrity)"
# The registry's integrity is sha512 of the tarball: check the download against it before using anything inside.
ACTUAL="sha512-$(openssl dgst -sha512 -binary "$TARBALL" | base64 -w0)"
[ "$ACTUAL" = "$INTEGRITY" ] || { echo "vendor_js: tarball integrity $ACTUAL != registry $INTEGRITY" >&2; exit 1; }
tar -xzf "$TARBALL" -C "$WORK"
mkdir -p "$DEST"
cp "$WORK/package/dist/$FILE" "$DEST/$FILE"
cp "$WORK/package/LICENSE" "$DEST/lightweight-charts.LICENSE"
SHA256="$(sha256sum "$DEST/$FILE" | cut -d' ' -f1)"
cat > "$DEST/manifest.json" <<JSON
{
  "package": "lightweight-charts",
  "version": "$LWC_VERSION",
  "registry_integrity": "$INTEGRITY",
  "file": "$FILE",
  "sha256": "$SHA256",
  "license": "Apache-2.0 (lightweight-charts.LICENSE)"
}
JSON
echo "vendored lightweight-charts $LWC_VERSION -> $DEST/$FILE (sha256 $SHA256)"
