"""The SLA misses the DAG processor recorded (:mod:`squall.scheduler.sla` finds them), as
``squall dags sla-misses`` and ``/api/v1/dags/{dag_id}/slaMisses`` show them."""

from __future__ import annotations

from typing import Any

from squall.common.models import SlaMiss


def sla_miss_dict(row: SlaMiss) -> dict[str, Any]:
    """A row as the CLI and the API show it."""
    return {"dag_id": row.dag_id, "task_id": row.task_id, "run_id": row.run_id,
            "execution_date": row.execution_date.isoformat(),
            "deadline": row.deadline.isoformat(), "timestamp": row.timestamp.isoformat(),
            "notification_sent": row.notification_sent, "email_sent": row.email_sent,
            "description": row.description}
