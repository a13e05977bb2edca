"""A fake application for the trust tests (issue 14): its modules hold the doors an allow-list must
not open (module attributes, re-exported functions, class attributes that are modules...)."""
