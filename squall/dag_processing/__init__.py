"""DAG file processing: list the DAG folder, import each file in an isolated child with a
timeout, serialize its DAGs, and sync them (and import errors) to the database."""
