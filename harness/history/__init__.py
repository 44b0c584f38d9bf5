"""The run history: every run appended to a store (SQLite by default, PostgreSQL for a team), and what it tells.

A layer of its own between the plugin and the runner: only the controller (`hook.after_run`)
and the command line (`cli`) import it, so workers and planning never load the SQL toolkit.
`store` and `tables` (with `migrations/`) keep the rows; `facts` makes them from results.json;
`drift` and `analysis` find shifts and flaky specs; `queries` reads trends back; `bisect`
walks commits.
"""
