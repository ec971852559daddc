"""Inspection of one expert version: pure metric functions (agop, collapse, confusion,
attribution, opacity) and `report`, which loads one version and writes the report."""
