"""Ray job: touch every service of the stack (Postgres, Mongo, lake, Snowflake, MLflow).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/smoke.py
"""

from paylake.cli import app

if __name__ == "__main__":
    app(["smoke"])
