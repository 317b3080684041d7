-- Runs once, when the postgres volume is first initialised (as POSTGRES_USER, in POSTGRES_DB).
-- POSTGRES_DB (default "optuna") holds the Optuna storage; this is the MLflow server's backend.
CREATE DATABASE mlflow;
