#!/usr/bin/env bash
# Runs every test: unit tests, the integration tests against real MariaDB servers, and the
# jepsen checker tests. Creates the Python venv the client tests need on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x target/venv/bin/python ]; then
  python3 -m venv target/venv
fi
# `python -m pip`, not the venv's pip script: a venv copied from another checkout keeps that
# checkout's path in its scripts' shebangs and would install there.
if ! target/venv/bin/python -c 'import pymysql, sqlalchemy, alembic, oslo_db' 2>/dev/null; then
  target/venv/bin/python -m pip install -q -r tests/requirements.txt
fi
# The jepsen CI run drives the release binary as separate processes (kill -9, pauses).
cargo build --release -p certus
export CERTUS_BIN="${CERTUS_BIN:-$PWD/target/release/certus}"
exec cargo test --workspace "$@"
