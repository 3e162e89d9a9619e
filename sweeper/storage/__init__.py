"""The study store: the only channel between a controller and its workers.

Everything that must hold across processes and machines (how many trials are done, who may start
the next one, who sweeps a study) is answered from the database itself.

- `url`: where the store is, and its URL parsed once (kind, SQLite file, password masked);
- `rdb`: opening it (with heartbeats), older schemas refused untouched, failures in one line;
- `rdb_storage`: the store object, Optuna's RDBStorage tuned for many workers (it pickles);
- `sqlite`: SQLite for many processes of one machine, and read-only reading;
- `errors`: store errors told apart (what a running sweep waits out, what stops it) in one line;
- `counts`: the trial budget, counted in the database;
- `trial_attrs`: a trial's attributes, many in one write, also after it finished, and read back;
- `locks`: the budget lock and the sweep lock, one class per kind of store.
"""
