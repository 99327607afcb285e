"""Guidance from measurements: modulated margin, heat-sink risk, bioheat estimate, remnant budget (no Qt)."""
