# The MLflow server image with the PostgreSQL driver it lacks.
FROM ghcr.io/mlflow/mlflow:v3.1.0
RUN pip install --no-cache-dir "psycopg2-binary>=2.9,<3"
