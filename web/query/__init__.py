"""Turning query strings into SQL and rows into JSON: filters, paging, features, rollup reads."""
