#!/usr/bin/env bash
# Run a command (a node's `ray start`) with secrets from AWS SSM Parameter Store in its
# environment, by name:   ray_cluster/node_secrets.sh HF_TOKEN OPENAI_API_KEY -- ray start ...
# Each NAME is read from the SecureString parameter $FABLE_KD_SECRETS_PREFIX/NAME (default
# /fable-kd/NAME) and exported to the command alone: never written to a file or a command
# line. Ray's processes inherit it, and so do the jobs and tasks they start. Not through a
# job's runtime_env: Ray writes its env_vars in plain text to runtime_env_agent.log and shows
# them in the dashboard (ray-project/ray#28276). A parameter that does not exist is skipped,
# naming it (a run without a gated teacher needs no HF_TOKEN).
set -euo pipefail
prefix=${FABLE_KD_SECRETS_PREFIX:-/fable-kd}
names=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do names+=("$1"); shift; done
if [ $# -lt 2 ]; then
  echo "usage: $0 NAME... -- COMMAND..." >&2
  exit 2
fi
shift
for name in "${names[@]}"; do
  if ! [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
    echo "node_secrets: '${name%%=*}' is not a variable name (pass names, never values)" >&2
    exit 2
  fi
  if value=$(aws ssm get-parameter --name "$prefix/$name" --with-decryption --query Parameter.Value --output text 2>/dev/null); then
    export "$name=$value"
  else
    echo "node_secrets: no parameter $prefix/$name in SSM Parameter Store (or no permission to read it); $name left unset" >&2
  fi
done
exec "$@"
