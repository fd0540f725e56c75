"""Reports: tables, figures and markdown written from run folders."""
