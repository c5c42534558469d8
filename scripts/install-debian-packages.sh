#!/bin/sh
# System packages the integration tests run for real: `prometheus` (the Debian package),
# which tests/integration/test_prometheus_scrape.py starts to scrape live workers, and
# `chromium`, the headless browser tests/integration/test_console.py drives through Playwright
# (Playwright's own browser download is not available here; the Debian build is), and
# `valgrind`, whose cachegrind counts instructions for `python -m bench.run_cost
# --instructions` (its smoke test runs in tests/integration/test_bench_smoke.py).
# Idempotent: does nothing when every command is already on PATH. `make test` calls it.
set -eu

missing=""
for package in prometheus chromium valgrind; do
    command -v "$package" >/dev/null 2>&1 || missing="$missing $package"
done
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-debian-packages: no apt-get here; install$missing yourself (it must be on PATH)." >&2
    exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-debian-packages: installing$missing"
# Recommends would pull in the node exporter, fonts and friends; the tests need the programs alone.
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing \
    || { $sudo apt-get update && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing; }
