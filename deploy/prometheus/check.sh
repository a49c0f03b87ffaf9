#!/usr/bin/env bash
# Checks the monitoring files under deploy/: the Prometheus config (and the
# rule file it loads), the alerting rules and their unit tests, and that the
# Grafana dashboard is valid JSON. Runs from any directory; installs
# promtool (Debian's prometheus package) first if it is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"

if ! command -v promtool >/dev/null 2>&1; then
    "${repo}/tests/prometheus/install.sh"
fi

# `check config` also checks the rule files prometheus.yml lists; the rules
# are checked on their own too, so an error names the right file.
promtool check config "${here}/prometheus.yml"
promtool check rules "${here}/alerts.yml"
# rule_files in the test file are resolved from its own directory.
promtool test rules "${here}/alerts_test.yml"

dashboard="${repo}/deploy/grafana/wsgate-dashboard.json"
python3 -m json.tool "${dashboard}" >/dev/null
echo "SUCCESS: ${dashboard} is valid JSON"

# Grafana only parses a panel's query when someone opens the dashboard. With
# its variables replaced by sample values, each query becomes a recording rule
# so that promtool's parser sees every one of them now.
queries="$(mktemp --suffix=.yml)"
trap 'rm -f "${queries}"' EXIT
python3 - "${dashboard}" >"${queries}" <<'PY'
import json
import sys

samples = {"$__rate_interval": "5m", "$__range": "1h", "$instance": ".*", "$route": "sample"}
dashboard = json.load(open(sys.argv[1]))
print("groups:\n  - name: dashboard\n    rules:")
for panel in dashboard["panels"]:
    for target in panel.get("targets", []):
        expr = target["expr"]
        for variable, sample in samples.items():
            expr = expr.replace(variable, sample)
        if "$" in expr:
            sys.exit(f"panel {panel['title']!r}: unknown variable in {target['expr']}")
        print(f"      - record: dashboard:panel{panel['id']}:{target['refId']}")
        print(f"        expr: {json.dumps(expr)}")
PY
promtool check rules "${queries}" >/dev/null
echo "SUCCESS: every dashboard query parses"
