#!/usr/bin/env bash
# Gradescope's image build: Python and this course's ckalab (the same version the students use,
# so the lab and grader digests in their bundles match). No cluster is needed to verify bundles.
set -euo pipefail
apt-get update && apt-get install -y python3-venv
python3 -m venv /opt/ckalab
/opt/ckalab/bin/pip install -r /autograder/source/ckalab/requirements.txt
/opt/ckalab/bin/pip install --no-deps /autograder/source/ckalab
ln -s /opt/ckalab/bin/ckalab /usr/local/bin/ckalab
