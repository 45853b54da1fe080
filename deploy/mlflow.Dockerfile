# The MLflow server image with the PostgreSQL driver it lacks. Keep the version
# equal to the mlflow normlab installs: client and server speak the same API.
ARG MLFLOW_VERSION=3.17.2
FROM ghcr.io/mlflow/mlflow:v${MLFLOW_VERSION}
RUN pip install --no-cache-dir "psycopg2-binary>=2.9,<3"
