"""What DAG files import: ``DAG``, operators, sensors, ``@task``, task groups, edges
(``>>``), templating, trigger rules and timetables (``from squall import ...`` re-exports
the public names)."""
