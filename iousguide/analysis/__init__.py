"""Pure image analysis: vessels, tumour, tracking, distances and diameters (no Qt)."""
