"""Operators shipped with Squall."""
