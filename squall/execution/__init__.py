"""Running one try's user code, shared by the worker's task process, ``squall dags test``
and the DAG processor's callback runner: the context, the runner, the try's outcome, and
the callback requests recorded when a try ends without its task's code at hand."""
