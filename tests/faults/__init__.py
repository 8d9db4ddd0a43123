"""Fault injection: real processes killed, services stopped or cut; see conftest.py and
docs/guarantees.md ("The fault-injection suite")."""
