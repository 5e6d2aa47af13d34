#!/usr/bin/env bash
# Re-take the app's screenshots with the browser tests and copy them into docs/screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIPLAB_UPDATE_SCREENSHOTS=1 python -m pytest tests/test_browser.py tests/test_map.py tests/test_dashboard.py -q -m browser "$@"
