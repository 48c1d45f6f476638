"""The campaign file: its pydantic models, loading and preparation of the target
(campaign), amendments to a running campaign (amend), and the generated field reference
(reference)."""
