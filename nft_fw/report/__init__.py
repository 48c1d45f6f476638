"""Reports: the campaign summary (summary), its figures (plots, relax_plots, md_plots)
and the self-contained report.html (page)."""
