"""The Celery app of the stack's workers: the one the instance's CeleryRunLauncher sends runs to
(broker, backend and settings from $DAGSTER_HOME/dagster.yaml), with its run tasks registered.

Started by spymaster_assets/stack.py as `celery -A celery_app worker` from this directory."""

from dagster import DagsterInstance
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task

app = DagsterInstance.get().run_launcher.celery
execute_job = create_execute_job_task(app)
resume_job = create_resume_job_task(app)

# Load the code location once per worker, now: every run this worker executes reuses it (the run
# reconstructs its job from this module) instead of paying the imports per run.
import spymaster_assets.definitions  # noqa: E402, F401
