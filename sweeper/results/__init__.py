"""Reading a study after (or while) it runs: nothing here writes a trial.

- `report`: status, report, best: tables, importances, the Pareto front, figures;
- `retrain`: a chosen trial's model trained again from its parameters;
- `occupancy`: how busy each GPU slot was, from the trials' recorded times;
- `lineage`: where a warm-started study came from, in one line.
"""
