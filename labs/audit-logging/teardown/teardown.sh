# Undo for audit-logging what restoring ckalab's manifests cannot: the task tells the learner to
# leave ckalab's own policy alone, but if it was edited anyway, the restored API server would
# log by the learner's rules and the classroom's evidence (logs/audit.log) would go missing.
# Put ckalab's policy back when it differs. Idempotent; needs no API server.
etc=$(dirname "$CKALAB_PKI_DIR")
python - "$etc/audit-policy.yaml" <<'PY'
import sys
from pathlib import Path

import yaml

from ckalab import home
from ckalab.cluster.local import LocalCluster

path = Path(sys.argv[1])
want = yaml.safe_dump(LocalCluster.AUDIT_POLICY, sort_keys=False)
try:
    same = path.read_text() == want
except OSError:
    same = False
if not same and path.parent.is_dir():
    if path.exists():
        aside = path.with_name(f"audit-policy.yaml.edited")
        path.replace(aside)
        print(f"ckalab's audit policy had been changed: kept the changed one as {aside.name}")
    home.write_atomic(path, want)
    print("ckalab's audit policy put back at /etc/kubernetes/audit-policy.yaml")
PY
