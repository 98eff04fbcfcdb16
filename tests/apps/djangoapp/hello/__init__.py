"""A Django app holding one static file (hello/site.css)."""
