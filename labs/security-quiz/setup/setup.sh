# The answers template and questions.md are rendered from data/questions.yaml by the grader module,
# so the questions have one source. An existing {{ answers_file }} is the learner's: it is
# never replaced (start twice equals start once).
# The second argument, the lab's shuffle param, orders the choices (0: as in data/questions.yaml).
python - "{{ answers_file }}" "{{ shuffle }}" <<'PY'
import sys

from ckalab import labs
from ckalab.grading import load_grader

grader = load_grader(labs.graders_root() / "security-quiz.py")
grader.write_workdir_files(sys.argv[1], int(sys.argv[2]))
PY
