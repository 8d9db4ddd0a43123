"""``squall api``: the REST API (``/api/v1``, shaped like Airflow 2's stable REST API), the
experimental endpoints of Airflow 2.0, and the web UI, served by one FastAPI application
(:func:`squall.api.app.create_app`)."""
