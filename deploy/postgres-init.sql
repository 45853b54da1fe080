-- The MLflow database next to Prefect's (POSTGRES_DB creates `prefect`).
CREATE DATABASE mlflow OWNER normlab;
