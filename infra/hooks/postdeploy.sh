#!/usr/bin/env sh
# Event Grid only subscribes a function that exists: once the code is deployed, the template is
# applied again with the subscription on (a quick, incremental provision, done once).
set -eu
if [ "$(azd env get-value EVENT_SUBSCRIPTION_ENABLED 2>/dev/null || true)" = "true" ]; then
  exit 0
fi
azd env set EVENT_SUBSCRIPTION_ENABLED true
azd provision --no-prompt
