"""Building FireWorks Workflows from validated specs."""
