#!/usr/bin/env bash
# Builds and lints every Bicep template with the Bicep CLI, failing on any warning, and checks that
# infra/main.json (the compiled template the tests cross-check against the code) is current.
# `--write` rewrites infra/main.json instead of checking it.
# The CLI comes from NuGet (Azure.Bicep.CommandLine.linux-x64), restored with the .NET SDK into a
# cache folder outside the project; `npm test` does not need any of this.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.49.2
tools="${BICEP_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ci-braze-connector/bicep-$version}"
bicep="$tools/packages/azure.bicep.commandline.linux-x64/$version/tools/bicep"
if [ ! -x "$bicep" ]; then
  command -v dotnet >/dev/null || { echo "infra:check needs the .NET SDK (dotnet) to restore the Bicep CLI from NuGet" >&2; exit 2; }
  mkdir -p "$tools/restore"
  cat > "$tools/restore/restore.csproj" <<CSPROJ
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup><TargetFramework>net10.0</TargetFramework></PropertyGroup>
  <ItemGroup><PackageDownload Include="Azure.Bicep.CommandLine.linux-x64" Version="[$version]" /></ItemGroup>
</Project>
CSPROJ
  dotnet restore "$tools/restore/restore.csproj" --packages "$tools/packages" >/dev/null
  chmod +x "$bicep"
fi
"$bicep" --version

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=0
for template in infra/main.bicep infra/modules/*.bicep; do
  "$bicep" build "$template" --stdout > "$work/out.json" 2> "$work/build.txt" || failed=1
  "$bicep" lint "$template" > "$work/lint.txt" 2>&1 || failed=1
  if [ -s "$work/build.txt" ] || [ -s "$work/lint.txt" ]; then
    cat "$work/build.txt" "$work/lint.txt"
    failed=1
  fi
done
[ "$failed" = 0 ] || { echo "Bicep reported errors or warnings" >&2; exit 1; }

"$bicep" build infra/main.bicep --stdout > "$work/main.json"
if [ "${1:-}" = "--write" ]; then
  cp "$work/main.json" infra/main.json
  echo "infra/main.json written"
elif ! cmp -s "$work/main.json" infra/main.json; then
  echo "infra/main.json is not the build of infra/main.bicep: run npm run infra:build and commit it" >&2
  exit 1
fi
echo "infra: every template builds and lints clean"
